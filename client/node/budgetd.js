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
// streaming RPCs (ConsumeStream, Subscribe, BatchStream) are on `raw.budget`, the
// grpc-js client.
//
// Batches (see `batch` and `BatchStream` below): up to `maxBatchOperations` operations
// (a connect() option, 256 by default as the daemon's server.max_batch_operations),
// each `{ check | reserve | commit | release | consume: <that RPC's request> }`, carried
// out in order; the results come back in the same order, each the operation's response
// or a `BatchOperationError` (`code`, `details` naming `operations[i]`, `index`). A batch
// of none or too many operations is refused whole before anything is sent, as the
// daemon would refuse it (INVALID_ARGUMENT): it is never split, so one batch stays one
// message, one journal write and one answer.
//
//   const results = await client.batch([{ consume: request }, { check: { labels, estimate } }]);
//   const stream = client.batchStream({ maxInFlight: 8 });
//   const more = await stream.send(operations);   // answers matched by sequence
//   await stream.close();                         // once every sent batch is answered
//
// Retries are the channel's, not a loop of ours: `connect()` passes the contract's
// service config (protos/budgetd/v1/service_config.json) as the channel option
// `grpc.service_config`, and grpc-js (retries on by default) sends a call that failed
// with UNAVAILABLE again, the same request each time, with backoff, up to 5 attempts
// within the call's deadline: for the calls idempotent by request_id (Reserve, Commit,
// Release, Consume, Batch, OpenRun, CloseRun, ResetLedger), the reads and Heartbeat (not
// the streams). A lost answer that was in fact applied comes back on the retry as the
// stored answer with `replayed: true`, counted once.
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
 * Batches: `batch(operations, {deadlineMs})` and `batchStream({maxInFlight, deadlineMs})`
 * (see below), held to `maxBatchOperations` operations a batch (default 256, the
 * daemon's default server.max_batch_operations: give the daemon's own value,
 * GetServerInfo.max_batch_operations, when it is configured otherwise). `close()`
 * cancels the batch streams still open (their pending sends fail CANCELLED).
 */
export function connect(target = defaultTarget(), options = {}) {
  const { deadlineMs = DEFAULT_DEADLINE_MS, channelOptions = {}, env = process.env } = options;
  const maxOperations = batchBound(
    options.maxBatchOperations ?? DEFAULT_MAX_BATCH_OPERATIONS,
    "maxBatchOperations",
  );
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
  const budget = promisify(raw.budget, pkg.BudgetService.service, deadlineMs);
  const streams = new Set(); // the open batch streams, cancelled by close()
  return {
    target,
    raw,
    budget,
    admin: promisify(raw.admin, pkg.BudgetAdminService.service, deadlineMs),
    maxBatchOperations: maxOperations,
    batch: (operations, callOptions = {}) =>
      batch(budget, operations, { ...callOptions, maxOperations }),
    batchStream(streamOptions = {}) {
      const stream = new BatchStream(raw.budget, { ...streamOptions, maxOperations });
      streams.add(stream);
      stream.closed.then(() => streams.delete(stream));
      return stream;
    },
    close() {
      for (const stream of streams) stream.cancel();
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

// --- batches -----------------------------------------------------------------------

/** The daemon's default server.max_batch_operations: what connect() holds batches to. */
export const DEFAULT_MAX_BATCH_OPERATIONS = 256;
/** Batches a BatchStream sends ahead of their answers (the daemon reads 8 ahead). */
export const DEFAULT_BATCH_STREAM_IN_FLIGHT = 8;
/** The kinds of operation a batch may carry: the BatchOperation oneof, in field order. */
export const BATCH_KINDS = Object.freeze(["check", "reserve", "commit", "release", "consume"]);

/**
 * A gRPC status as an Error shaped like grpc-js's (`code`, `details`, `metadata`, and
 * a message `"3 INVALID_ARGUMENT: <details>"`), for what the client reports without a
 * call of its own: a batch refused whole, one a BatchStream could not get answered.
 */
export class StatusError extends Error {
  constructor(code, details, options = {}) {
    super(`${code} ${statusName(code)}: ${details}`, options.cause ? { cause: options.cause } : {});
    this.name = "StatusError";
    this.code = code;
    this.details = details;
    this.metadata = options.metadata ?? new grpc.Metadata();
  }
}

/**
 * One operation of a batch failed: the status its own RPC would have ended with
 * (`code`, `details` naming `operations[index]`), nothing of it applied; the other
 * operations of the batch are not affected. `operation` is its kind ("consume", ...;
 * null when the operation set none).
 */
export class BatchOperationError extends StatusError {
  constructor(index, operation, code, details) {
    super(code, details);
    this.name = "BatchOperationError";
    this.index = index;
    this.operation = operation;
  }
}

function batchBound(value, name) {
  if (!Number.isInteger(value) || value < 1) {
    throw new TypeError(`${name} must be an integer >= 1, not ${String(value)}`);
  }
  return value;
}

/** The kind an operation sets (null for none, which the daemon answers with an error
 * result); a StatusError when it is no operation or sets more than one (the wire would
 * silently keep only one of them). */
function kindOf(operation, index) {
  if (operation === null || typeof operation !== "object" || Array.isArray(operation)) {
    const shape = `{ ${BATCH_KINDS.join(" | ")}: request }`;
    throw refusedHere(`operations[${index}]: must be an object ${shape}`);
  }
  const set = BATCH_KINDS.filter((kind) => operation[kind] != null);
  if (set.length > 1) {
    throw refusedHere(`operations[${index}]: one operation each; ${set.join(" and ")} are all set`);
  }
  return set[0] ?? null;
}

/** The kinds of `operations`, or throws what refuses the whole batch before it is sent
 * (`sent: false`): a StatusError INVALID_ARGUMENT, as the daemon would answer, when it
 * holds none or more than `maxOperations`; a TypeError when it is not an array. */
function checkBatch(operations, maxOperations) {
  if (!Array.isArray(operations)) {
    throw new TypeError("operations must be an array of batch operations");
  }
  if (operations.length < 1 || operations.length > maxOperations) {
    const message =
      `operations: must hold 1..${maxOperations} operations (the client's ` +
      `maxBatchOperations; nothing was sent); got ${operations.length}`;
    throw refusedHere(message);
  }
  return operations.map(kindOf);
}

function refusedHere(message) {
  const error = new StatusError(Status.INVALID_ARGUMENT, message);
  error.sent = false;
  return error;
}

/** A BatchResponse as results in order: each the response, or a BatchOperationError. */
function batchResults(response, kinds) {
  const { results } = response;
  if (results.length !== kinds.length) {
    const message = `the daemon answered ${results.length} results to ${kinds.length} operations`;
    throw new StatusError(Status.INTERNAL, message);
  }
  return results.map((result, index) => {
    if (result.result === "error") {
      const { code, message } = result.error;
      return new BatchOperationError(index, kinds[index], code, message);
    }
    if (!result.result) {
      const message = `operations[${index}]: the daemon's result holds no answer`;
      return new BatchOperationError(index, kinds[index], Status.INTERNAL, message);
    }
    return result[result.result];
  });
}

/**
 * One Batch call through `budget` (a `promisify`d BudgetService): resolves to one result
 * per operation, in order, each the operation's response (a CheckResponse,
 * ReserveResponse, ...) or a BatchOperationError. Rejects with a StatusError, before
 * anything is sent, for none or more than `maxOperations` operations (or an entry that
 * is not one operation), and with the grpc-js error when the call fails as a whole (the
 * daemon's own refusal, e.g. a lower server.max_batch_operations, included). The channel
 * retries UNAVAILABLE with the same request, like the other request_id calls.
 */
export async function batch(budget, operations, options = {}) {
  const { maxOperations = DEFAULT_MAX_BATCH_OPERATIONS, deadlineMs } = options;
  const kinds = checkBatch(operations, maxOperations);
  const callOptions = deadlineMs === undefined ? {} : { deadlineMs };
  return batchResults(await budget.Batch({ operations }, callOptions), kinds);
}

/**
 * Batches over one BatchStream call of `client` (the grpc-js BudgetService client,
 * `raw.budget`), answers matched to their batches by sequence.
 *
 * `send(operations)` resolves to the batch's results, as `batch()` does; at most
 * `maxInFlight` batches are sent and not yet answered, later ones wait their turn in
 * order (await the sends, or a window of them, to bound what waits). A send refused
 * whole (none or too many operations: before it is sent; or by the daemon's `error`
 * answer) rejects with a StatusError and the stream goes on. When the stream ends
 * (the daemon or the connection failed, a message over the daemon's size limit,
 * `deadlineMs` passed, `cancel()`), every pending send rejects with a StatusError with
 * the stream's code, saying whether its batch was sent (`sent`: it may have been
 * applied; sending the same operations again is safe, request_ids make a repeat a
 * replay) or not; a later send rejects at once.
 *
 * `close()` sends what waits, ends the requests and resolves once the stream has ended
 * (every sent batch answered or failed); `cancel()` ends it now; `closed` is that end.
 */
export class BatchStream {
  #call;
  #maxInFlight;
  #maxOperations;
  #nextSequence = 1;
  #inFlight = new Map(); // sequence -> { kinds, resolve, reject }, in send order
  #waiting = []; // { operations, kinds, resolve, reject }, not yet sent
  #failure = null; // the StatusError that ended the stream, once it has
  #closing = false;
  #halfClosed = false;
  #status = null;
  #ended = false;
  #resolveClosed;

  constructor(client, options = {}) {
    const {
      maxInFlight = DEFAULT_BATCH_STREAM_IN_FLIGHT,
      maxOperations = DEFAULT_MAX_BATCH_OPERATIONS,
      deadlineMs = null,
    } = options;
    this.#maxInFlight = batchBound(maxInFlight, "maxInFlight");
    this.#maxOperations = batchBound(maxOperations, "maxOperations");
    /** Resolves (never rejects) once the stream has ended and every send is settled. */
    this.closed = new Promise((resolve) => {
      this.#resolveClosed = resolve;
    });
    const callOptions = deadlineMs === null ? {} : { deadline: new Date(Date.now() + deadlineMs) };
    this.#call = client.BatchStream(callOptions);
    this.#call.on("data", (answer) => this.#answer(answer));
    this.#call.on("error", () => {}); // the status (below) carries it
    this.#call.on("status", (status) => {
      this.#status = status;
      this.#finish();
    });
    this.#call.on("end", () => {
      this.#ended = true; // every answer received has been handled
      this.#finish();
    });
  }

  /** Batches sent and not yet answered (at most maxInFlight). */
  get inFlight() {
    return this.#inFlight.size;
  }

  /** Batches given to send() and waiting for a place in flight. */
  get waiting() {
    return this.#waiting.length;
  }

  /** The batch's results, in order (see the class). */
  send(operations) {
    if (this.#closing) return Promise.reject(new Error("BatchStream: send() after close()"));
    if (this.#failure !== null) return Promise.reject(this.#unanswered(this.#failure, false));
    let kinds;
    try {
      kinds = checkBatch(operations, this.#maxOperations);
    } catch (error) {
      return Promise.reject(error);
    }
    return new Promise((resolve, reject) => {
      this.#waiting.push({ operations, kinds, resolve, reject });
      this.#pump();
    });
  }

  /** Send what waits, then end the requests; resolves once the stream has ended. */
  close() {
    this.#closing = true;
    this.#pump();
    return this.closed;
  }

  /** End the stream now: pending sends reject with CANCELLED. */
  cancel() {
    this.#fail(new StatusError(Status.CANCELLED, "cancelled by the client"));
    this.#call.cancel();
    return this.closed;
  }

  #pump() {
    while (this.#failure === null && this.#waiting.length > 0) {
      if (this.#inFlight.size >= this.#maxInFlight) return;
      const { operations, kinds, resolve, reject } = this.#waiting.shift();
      const sequence = this.#nextSequence++;
      this.#inFlight.set(sequence, { kinds, resolve, reject });
      this.#call.write({ sequence, batch: { operations } });
    }
    if (this.#closing && this.#failure === null && !this.#halfClosed) {
      this.#halfClosed = true;
      this.#call.end();
    }
  }

  #answer(answer) {
    if (this.#failure !== null) return; // cancelled: its sends have been failed already
    const pending = this.#inFlight.get(answer.sequence);
    if (pending === undefined) {
      const message = `BatchStream: an answer to sequence ${answer.sequence}, which is not pending`;
      this.#fail(new StatusError(Status.INTERNAL, message));
      this.#call.cancel();
      return;
    }
    this.#inFlight.delete(answer.sequence);
    if (answer.result === "response") {
      try {
        pending.resolve(batchResults(answer.response, pending.kinds));
      } catch (error) {
        pending.reject(error);
      }
    } else {
      const { code, message } = answer.error ?? {};
      const refused = new StatusError(code ?? Status.INTERNAL, message || "no answer");
      pending.reject(refused); // the whole batch refused; none of it applied
    }
    this.#pump();
  }

  /** Once the status has come and every message before it has been read. */
  #finish() {
    if (this.#status === null || !this.#ended) return;
    const { code, details, metadata } = this.#status;
    if (code === Status.OK) {
      const message = "BatchStream: the daemon ended the stream without answering";
      this.#fail(new StatusError(Status.INTERNAL, message, { metadata }));
    } else {
      this.#fail(new StatusError(code, details, { metadata }));
    }
    this.#resolveClosed();
  }

  /** End the stream with `failure`: every pending send rejects. */
  #fail(failure) {
    if (this.#failure !== null) return;
    this.#failure = failure;
    const sent = [...this.#inFlight.values()];
    const waiting = this.#waiting;
    this.#inFlight.clear();
    this.#waiting = [];
    for (const { reject } of sent) reject(this.#unanswered(failure, true));
    for (const { reject } of waiting) reject(this.#unanswered(failure, false));
  }

  #unanswered(failure, sent) {
    const what = sent
      ? "the stream ended before the batch was answered (it was sent: some or all of it " +
        "may have been applied)"
      : "the stream ended before the batch was sent (none of it was applied)";
    const error = new StatusError(failure.code, `${what}: ${failure.details}`, {
      cause: failure,
      metadata: failure.metadata,
    });
    error.sent = sent;
    return error;
  }
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
