/**
 * Secrets and identity read from files: the basic-auth credentials file and
 * the Common Name of the device certificate (the fallback device id).
 *
 * @module
 */
import { X509Certificate } from "node:crypto";
import { ConfigError, fail, invalid } from "./_messages.ts";
import { lookup, parseTomlText } from "./_toml.ts";
import { CONTROL, word } from "./checks.ts";
import type { Credentials } from "./types.ts";
import { errorMessage } from "../util/errors.ts";

/** Reads a basic-auth credentials file (`[c8y] username, password`); never shows the password. */
export function parseCredentials(file: string, text: string): Credentials {
  const doc = parseTomlText(file, text);
  const issues: string[] = [];
  const username = lookup(doc, "c8y.username");
  const password = lookup(doc, "c8y.password");
  const userOk = typeof username === "string" && username.trim() !== "" &&
    !username.includes(":") && !CONTROL.test(username);
  if (username === undefined) {
    issues.push(`${file}: key c8y.username is not set`);
  } else if (!userOk) {
    // Hidden: a "user:password" typo would put the password in the message.
    issues.push(invalid(
      file,
      "c8y.username",
      username,
      'a non-empty string without ":", e.g. "t12345/device-user"',
      true,
    ));
  }
  if (password === undefined) {
    issues.push(`${file}: key c8y.password is not set`);
  } else if (typeof password !== "string" || password === "") {
    issues.push(invalid(file, "c8y.password", password, "a non-empty string"));
  }
  if (issues.length > 0) {
    issues.push(
      `${file}: expected [c8y] with username = "<tenant>/<user>" and password = "..."`,
    );
  }
  fail(issues);
  return { username: username as string, password: password as string };
}

/** The CN of the device certificate, the device id thin-edge registered. */
export function commonName(file: string, pem: string): string {
  let subject: string;
  try {
    subject = new X509Certificate(pem).subject;
  } catch (error) {
    const reason = errorMessage(error);
    throw new ConfigError(
      `${file}: cannot read the device id (certificate CN): not a valid PEM certificate (${reason}); set c8y.device_id instead`,
    );
  }
  const cn = subject.split("\n").find((line) => line.startsWith("CN="))
    ?.slice(3);
  if (!cn || !word(cn).ok) {
    throw new ConfigError(
      `${file}: cannot read the device id: the certificate subject has no usable CN; set c8y.device_id instead`,
    );
  }
  return cn;
}
