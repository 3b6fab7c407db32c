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

import fs from "node:fs";
import os from "node:os";
import path from "node:path";
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
 */
export function connect(target = defaultTarget(), options = {}) {
  const { deadlineMs = DEFAULT_DEADLINE_MS, channelOptions = {} } = options;
  const pkg = loadBudgetPackage();
  const credentials = grpc.credentials.createInsecure();
  const channel = { "grpc.service_config": loadServiceConfig(), ...channelOptions };
  const raw = {
    budget: new pkg.BudgetService(target, credentials, channel),
    admin: new pkg.BudgetAdminService(target, credentials, channel),
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
