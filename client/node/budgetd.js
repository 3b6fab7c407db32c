// budgetd.js — a tiny Node.js client of budgetd.
//
// It needs nothing generated: the contract, protos/budgetd/v1/budget.proto, is loaded
// at run time with @grpc/proto-loader. Field names stay as in the .proto (snake_case),
// enums are their names ("DECISION_ALLOW"), and 64-bit integers are JavaScript
// numbers: every int64 of the contract is at most 10^15 (token counts 10^12, costs
// 10^15), below Number.MAX_SAFE_INTEGER (about 9 * 10^15), so no precision is lost.
//
//   import { connect } from "./budgetd.js";
//   const { budget, admin, close } = connect();          // default target, see below
//   const answer = await budget.Reserve({ request_id, labels, estimate });
//
// Each unary RPC of BudgetService and BudgetAdminService is a method returning a
// promise; it rejects with the grpc-js error (`code`, `details`, `metadata`). The
// streaming RPCs (ConsumeStream, Subscribe) are on `raw.budget`, the grpc-js client.
//
// Retries are the channel's, not a loop of ours: `connect()` passes the contract's
// service config (protos/budgetd/v1/service_config.json) as the channel option
// `grpc.service_config`, and grpc-js (retries on by default) sends a call that failed
// with UNAVAILABLE again, the same request each time, with backoff, up to 5 attempts
// within the call's deadline: for the calls idempotent by request_id (Reserve, Commit,
// Release, Consume, OpenRun, CloseRun, ResetLedger), the reads and Heartbeat. A lost
// answer that was in fact applied comes back on the retry as the stored answer with
// `replayed: true`, counted once.
//
// Credentials, for a daemon's TCP listener that requires them (see `resolveCredentials`):
// a bearer token (`token`, `tokenFile`, else $BUDGETD_TOKEN / $BUDGETD_TOKEN_FILE), sent
// as `authorization: Bearer <token>` on every call, streams included; TLS (`tls: true`
// for the system's roots, or `tls: { ca, cert, key, serverName }` with PEM text or
// `caFile`, `certFile`, `keyFile` paths, else $BUDGETD_TLS_CA, ...). A token is never
// sent in plaintext beyond loopback, and a file that cannot be used is a
// `CredentialsError` naming it, thrown by `connect()` before anything is sent.
//
//   const { budget } = connect("budgetd.internal:50051", {
//     tokenFile: "/run/secrets/budgetd-token",
//     tls: { caFile: "/etc/budgetd/ca.pem" },
//   });

import fs from "node:fs";
import net from "node:net";
import os from "node:os";
import path from "node:path";
import tls from "node:tls";
import { fileURLToPath } from "node:url";

import grpc from "@grpc/grpc-js";
import protoLoader from "@grpc/proto-loader";

const HERE = path.dirname(fileURLToPath(import.meta.url));
export const PROTO_ROOT = path.resolve(HERE, "../../protos");
export const PROTO_FILE = "budgetd/v1/budget.proto";
/** gRPC's JSON service config of the contract: which calls retry UNAVAILABLE, and how. */
export const SERVICE_CONFIG_FILE = path.join(PROTO_ROOT, "budgetd/v1/service_config.json");

/** proto-loader options; `longs: Number` and `enums: String` everywhere. */
export const LOADER_OPTIONS = Object.freeze({
  keepCase: true,
  longs: Number,
  enums: String,
  defaults: true,
  oneofs: true,
  // google/protobuf/{duration,timestamp}.proto come bundled with protobufjs.
  includeDirs: [PROTO_ROOT],
});

/** Default deadline of one call, in milliseconds. */
export const DEFAULT_DEADLINE_MS = 10_000;

export const Status = grpc.status;

let cachedPackage = null;
let cachedServiceConfig = null;

/** The loaded `budgetd.v1` package (service constructors and message types). */
export function loadBudgetPackage() {
  if (cachedPackage === null) {
    const definition = protoLoader.loadSync(PROTO_FILE, LOADER_OPTIONS);
    cachedPackage = grpc.loadPackageDefinition(definition).budgetd.v1;
  }
  return cachedPackage;
}

/** The contract's service config, as the JSON text the `grpc.service_config` option takes. */
export function loadServiceConfig() {
  if (cachedServiceConfig === null) {
    const text = fs.readFileSync(SERVICE_CONFIG_FILE, "utf8");
    JSON.parse(text); // a broken file fails here, not as a channel that ignores it
    cachedServiceConfig = text;
  }
  return cachedServiceConfig;
}

/**
 * Where the daemon listens by default (same rule as server/budgetd/paths.py):
 * `$XDG_RUNTIME_DIR/budgetd.sock` when that is a directory, else
 * `<tmpdir>/budgetd-<uid>/budgetd.sock`.
 */
export function defaultSocketPath(env = process.env) {
  const runtime = env.XDG_RUNTIME_DIR || "";
  if (runtime && isDirectory(runtime)) {
    return path.join(runtime, "budgetd.sock");
  }
  return path.join(os.tmpdir(), `budgetd-${process.getuid()}`, "budgetd.sock");
}

/** The gRPC target: `$BUDGETD_TARGET`, else the default socket. */
export function defaultTarget(env = process.env) {
  return env.BUDGETD_TARGET || `unix:${defaultSocketPath(env)}`;
}

function isDirectory(dir) {
  try {
    return fs.statSync(dir).isDirectory();
  } catch {
    return false;
  }
}

/**
 * Clients of both services for `target` (e.g. `unix:/run/user/1000/budgetd.sock` or
 * `127.0.0.1:50051`). Returns `{ budget, admin, raw, target, close }`: `budget` and
 * `admin` have one promise-returning method per unary RPC, named as in the .proto.
 * The channels carry the contract's service config (retries, see above); entries of
 * `channelOptions` are added to it and win (e.g. `{"grpc.enable_retries": 0}`).
 * Credentials: `token` / `tokenFile` and `tls` (see `resolveCredentials`); `env`
 * stands in for `process.env`. UNAUTHENTICATED and PERMISSION_DENIED are not in the
 * service config's retryable codes: the channel never retries them.
 */
export function connect(target = defaultTarget(), options = {}) {
  const { deadlineMs = DEFAULT_DEADLINE_MS, channelOptions = {}, env = process.env } = options;
  const pkg = loadBudgetPackage();
  const auth = resolveCredentials(options, env);
  checkTransport(target, auth);
  const credentials = channelCredentials(auth);
  const channel = { "grpc.service_config": loadServiceConfig(), ...channelOptions };
  if (auth.tls?.serverName) channel["grpc.ssl_target_name_override"] = auth.tls.serverName;
  // grpc-js takes `interceptors` out of the options object it is given: one each.
  const interceptors = auth.token === null ? [] : [bearerInterceptor(auth.token)];
  const raw = {
    budget: new pkg.BudgetService(target, credentials, { ...channel, interceptors }),
    admin: new pkg.BudgetAdminService(target, credentials, { ...channel, interceptors }),
  };
  return {
    target,
    raw,
    budget: promisify(raw.budget, pkg.BudgetService.service, deadlineMs),
    admin: promisify(raw.admin, pkg.BudgetAdminService.service, deadlineMs),
    close() {
      raw.budget.close();
      raw.admin.close();
    },
  };
}

// --- credentials -------------------------------------------------------------------

export const ENV = Object.freeze({
  token: "BUDGETD_TOKEN",
  tokenFile: "BUDGETD_TOKEN_FILE",
  tls: "BUDGETD_TLS",
  ca: "BUDGETD_TLS_CA",
  cert: "BUDGETD_TLS_CERT",
  key: "BUDGETD_TLS_KEY",
  serverName: "BUDGETD_TLS_SERVER_NAME",
});
const MAX_TOKEN_CHARS = 4096; // the daemon refuses longer ones unhashed
const MAX_FILE_BYTES = 1 << 20; // a token, a certificate chain, a key or a CA bundle

/** The client's own credentials cannot be used; `path` names the file, when it is one. */
export class CredentialsError extends Error {
  constructor(message, path = null) {
    super(message);
    this.name = "CredentialsError";
    this.path = path;
  }
}

/**
 * `{ token, tokenSource, tls }` from `connect()`'s options, else the environment (each
 * group, token or TLS, falls back to its variables only when none of its options is
 * given, as in the Python SDK). `tls` is null (plaintext) or `{ ca, cert, key,
 * serverName }` with PEM Buffers (null: the system's roots; no client certificate).
 * Throws `CredentialsError`.
 */
export function resolveCredentials(options = {}, env = process.env) {
  const [token, tokenSource] = resolveToken(options, env);
  return { token, tokenSource, tls: resolveTls(options.tls, env) };
}

function resolveToken({ token, tokenFile }, env) {
  if (token != null && tokenFile != null) {
    throw new CredentialsError("give token or tokenFile, not both");
  }
  if (token != null) return [checkedToken(token, "token"), "token"];
  if (tokenFile != null) return [readToken(tokenFile, "tokenFile"), `tokenFile ${tokenFile}`];
  const fromEnv = env[ENV.token] || "";
  const fromFile = env[ENV.tokenFile] || "";
  if (fromEnv && fromFile) {
    throw new CredentialsError(`$${ENV.token} and $${ENV.tokenFile} are both set; set one`);
  }
  if (fromEnv) return [checkedToken(fromEnv, `$${ENV.token}`), `$${ENV.token}`];
  if (fromFile) return [readToken(fromFile, `$${ENV.tokenFile}`), `$${ENV.tokenFile}=${fromFile}`];
  return [null, ""];
}

/** One word of printable ASCII: what an HTTP/2 header value may hold. */
function checkedToken(value, where) {
  if (typeof value !== "string") throw new CredentialsError(`${where}: the token must be a string`);
  const text = value.trim();
  if (!text) throw new CredentialsError(`${where}: the token is empty`);
  if (text.length > MAX_TOKEN_CHARS) {
    throw new CredentialsError(`${where}: the token is longer than ${MAX_TOKEN_CHARS} characters`);
  }
  if (!/^[\x21-\x7e]+$/.test(text)) {
    throw new CredentialsError(`${where}: the token must be printable ASCII without spaces`);
  }
  return text;
}

function readToken(file, where) {
  const text = readFile(file, where).toString("latin1");
  try {
    return checkedToken(text, `${where} ${file}`);
  } catch (error) {
    throw new CredentialsError(error.message, file);
  }
}

function readFile(file, where) {
  let data;
  try {
    data = fs.readFileSync(file);
  } catch (error) {
    const reason = error.code ?? error.message;
    throw new CredentialsError(`${where} ${file}: cannot read: ${reason}`, file);
  }
  if (data.length > MAX_FILE_BYTES) {
    throw new CredentialsError(`${where} ${file}: larger than ${MAX_FILE_BYTES} bytes`, file);
  }
  return data;
}

function resolveTls(option, env) {
  if (option === false) return null;
  // `tls: true` asks for TLS; the files may still come from the environment.
  const given = option != null && option !== true ? option : tlsFromEnv(env);
  const any = Object.values(given).some((value) => value != null);
  if (option == null && !any && !tlsForced(env)) return null;
  const ca = pem(given.ca, given.caFile, "ca");
  const cert = pem(given.cert, given.certFile, "cert");
  const key = pem(given.key, given.keyFile, "key");
  if ((cert === null) !== (key === null)) {
    throw new CredentialsError("a client certificate needs both cert and key");
  }
  try {
    // Node's own TLS reads them as grpc-js will: a bad CA or a key that is not the
    // certificate's is found now, not as a failed handshake on the first call.
    tls.createSecureContext({
      ca: ca ?? undefined,
      cert: cert ?? undefined,
      key: key ?? undefined,
    });
  } catch (error) {
    if (/mismatch/i.test(error.message)) {
      const keyName = given.keyFile ?? "tls.key";
      const certName = given.certFile ?? "tls.cert";
      const message = `tls.keyFile ${keyName}: not the key of ${certName}`;
      throw new CredentialsError(message, given.keyFile ?? null);
    }
    const which = given.keyFile ?? given.certFile ?? given.caFile ?? null;
    throw new CredentialsError(`tls: ${which ?? "the PEM given"}: ${error.message}`, which);
  }
  return { ca, cert, key, serverName: given.serverName ?? null };
}

function tlsFromEnv(env) {
  return {
    caFile: env[ENV.ca] || undefined,
    certFile: env[ENV.cert] || undefined,
    keyFile: env[ENV.key] || undefined,
    serverName: env[ENV.serverName] || undefined,
  };
}

/** $BUDGETD_TLS: 1 forces TLS (the system's roots without a CA file). */
function tlsForced(env) {
  const value = (env[ENV.tls] || "").trim().toLowerCase();
  if (["1", "true", "yes", "on"].includes(value)) return true;
  if (["", "0", "false", "no", "off"].includes(value)) return false;
  const shown = JSON.stringify(value);
  throw new CredentialsError(`$${ENV.tls} must be 1 or 0 (true/false), not ${shown}`);
}

/** PEM text given inline, else read from `file`; null when neither. */
function pem(inline, file, name) {
  if (inline != null && file != null) {
    throw new CredentialsError(`give tls.${name} or tls.${name}File, not both`);
  }
  let data = null;
  if (inline != null) data = Buffer.from(inline);
  else if (file != null) data = readFile(file, `tls.${name}File`);
  if (data !== null && !data.includes("-----BEGIN ")) {
    const where = file != null ? `tls.${name}File ${file}` : `tls.${name}`;
    throw new CredentialsError(`${where}: not a PEM file`, file ?? null);
  }
  return data;
}

function channelCredentials(auth) {
  if (auth.tls === null) return grpc.credentials.createInsecure();
  return grpc.credentials.createSsl(auth.tls.ca, auth.tls.key, auth.tls.cert);
}

/** Refuse a token bound for plaintext beyond loopback: whoever sees it spends as you. */
export function checkTransport(target, auth) {
  if (auth.token === null || auth.tls !== null || isLocal(target)) return;
  throw new CredentialsError(
    `refusing to send the bearer token (${auth.tokenSource}) in plaintext to ${target}, ` +
      "which is not a loopback address: use TLS (tls: { caFile }), a Unix socket or 127.0.0.1",
  );
}

/** Whether a gRPC target is a Unix socket or loopback TCP (every address of it). */
export function isLocal(target) {
  if (/^(unix:|unix-abstract:|\/)/.test(target)) return true;
  const colon = target.indexOf(":");
  const scheme = colon < 0 ? "" : target.slice(0, colon);
  const rest = target.slice(colon + 1);
  if (scheme === "ipv4" || scheme === "ipv6") {
    return rest.split(",").every((address) => isLoopback(hostOf(address)));
  }
  if (scheme === "dns") {
    const name = rest.startsWith("//") ? rest.slice(2).split("/").slice(1).join("/") : rest;
    return isLoopback(hostOf(name));
  }
  return isLoopback(hostOf(target)); // host:port; another resolver's target is not local
}

function hostOf(address) {
  if (address.startsWith("[")) return address.slice(1).split("]")[0];
  const match = /^([^:]*):(\d+)$/.exec(address);
  return match ? match[1] : address;
}

function isLoopback(host) {
  const name = host.toLowerCase().replace(/\.$/, "");
  if (name === "localhost" || name.endsWith(".localhost")) return true;
  if (net.isIPv4(name)) return name.startsWith("127.");
  if (net.isIPv6(name)) return name === "::1" || /^(0{0,4}:){7}0{0,3}1$/.test(name);
  return false;
}

/** A grpc-js interceptor adding `authorization: Bearer <token>` to every call. */
export function bearerInterceptor(token) {
  const value = `Bearer ${token}`;
  return (options, nextCall) =>
    new grpc.InterceptingCall(nextCall(options), {
      start(metadata, listener, next) {
        metadata.set("authorization", value);
        next(metadata, listener);
      },
    });
}

/** `{ Method(request, {deadlineMs}) -> Promise }` for each unary method of a client. */
export function promisify(client, serviceDefinition, deadlineMs = DEFAULT_DEADLINE_MS) {
  const methods = {};
  for (const [name, method] of Object.entries(serviceDefinition)) {
    if (method.requestStream || method.responseStream) continue;
    methods[name] = (request, callOptions = {}) =>
      new Promise((resolve, reject) => {
        const deadline = new Date(Date.now() + (callOptions.deadlineMs ?? deadlineMs));
        client[name](request, { deadline }, (error, response) =>
          error ? reject(error) : resolve(response),
        );
      });
  }
  return methods;
}

/** The name of a gRPC status code, e.g. 3 -> "INVALID_ARGUMENT". */
export function statusName(code) {
  return Object.keys(Status).find((name) => Status[name] === code) ?? String(code);
}

/** A google.protobuf.Timestamp as a Date (null when unset). */
export function toDate(timestamp) {
  if (!timestamp) return null;
  return new Date(Number(timestamp.seconds) * 1000 + Math.floor(timestamp.nanos / 1e6));
}

/** A google.protobuf.Duration in milliseconds (null when unset). */
export function toMillis(duration) {
  if (!duration) return null;
  return Number(duration.seconds) * 1000 + duration.nanos / 1e6;
}

/** `{ seconds, nanos }` for a number of milliseconds (for ttl fields). */
export function duration(ms) {
  return { seconds: Math.floor(ms / 1000), nanos: (ms % 1000) * 1e6 };
}
