// Goal: the Node client uses what a gated budgetd requires. Against the REAL daemon
// (python -m budgetd) on loopback TCP: a bearer token from `token`, `tokenFile` or
// $BUDGETD_TOKEN spends; a wrong or missing token is UNAUTHENTICATED and a reader's
// Consume PERMISSION_DENIED, each sent once (the channel's retry policy retries only
// UNAVAILABLE); the Subscribe stream carries the token too. A second daemon with mTLS:
// the daemon's CA and a client certificate mapped to the agent role spend, and a
// token on the same connection decides for its call. The client's own mistakes (a
// missing file, a token bound for plaintext beyond loopback) throw a CredentialsError.
//
// Method: certificates are made with the repo's Python test helper (tests/auth_support.py,
// the `cryptography` package of the venv); token files hold the tokens' sha256 as the
// daemon wants. Each daemon is started with its own config, socket and state dir.

import assert from "node:assert/strict";
import { spawn, spawnSync } from "node:child_process";
import { createHash, randomUUID } from "node:crypto";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { after, before, describe, it } from "node:test";
import { fileURLToPath } from "node:url";

import grpc from "@grpc/grpc-js";

import { CredentialsError, Status, connect, isLocal, loadBudgetPackage } from "../budgetd.js";

const NODE_DIR = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "..");
const REPO_ROOT = path.resolve(NODE_DIR, "../..");
const PYTHON = process.env.BUDGETD_PYTHON
  ? path.resolve(process.env.BUDGETD_PYTHON)
  : path.resolve(REPO_ROOT, ".venv/bin/python");
const READY_WAIT_MS = 60_000; // a loaded CI machine starts slowly; the wait ends at "ready"
const TOKENS = { agent: "tok-agent", reader: "tok-reader", admin: "tok-admin" };
const PLANNER = "spiffe://acme/planner";
const LABELS = { agent: "node-auth", thread: "t-auth" };
const USAGE = { input_tokens: 100, output_tokens: 20, model: "gpt-4o-mini" };

function sha256(text) {
  return createHash("sha256").update(text, "utf8").digest("hex");
}

function writeSecret(file, text) {
  fs.writeFileSync(file, text, { mode: 0o600 });
  return file;
}

function tokenFile(file) {
  const entries = Object.entries(TOKENS).map(
    ([role, token]) =>
      `[[tokens]]\nname = "${role}s"\nsha256 = "${sha256(token)}"\nrole = "${role}"\n`,
  );
  return writeSecret(file, entries.join("\n"));
}

/** A CA, the daemon's certificate ("localhost") and client certificates, as PEM files. */
function makeCertificates(dir) {
  const script = `
import sys
from pathlib import Path
from tests.auth_support import Authority
out = Path(sys.argv[1])
ca = Authority()
(out / "ca.pem").write_bytes(ca.pem)
ca.server().write(out, "server")
ca.issue("planner", ["${PLANNER}"]).write(out, "planner")
`;
  const done = spawnSync(PYTHON, ["-c", script, dir], { cwd: REPO_ROOT, encoding: "utf8" });
  assert.equal(done.status, 0, `making certificates failed: ${done.stderr}`);
  const file = (name) => path.join(dir, name);
  return {
    ca: file("ca.pem"),
    server: { cert: file("server.pem"), key: file("server.key") },
    planner: { cert: file("planner.pem"), key: file("planner.key") },
  };
}

/** The daemon's environment: ours without BUDGETD_* (it would read them), core kept. */
function daemonEnv() {
  const env = { ...process.env, PYTHONUNBUFFERED: "1" };
  for (const name of Object.keys(env)) {
    if (name.startsWith("BUDGETD_") && name !== "BUDGETD_CORE") delete env[name];
  }
  return env;
}

/** A daemon on loopback TCP (port chosen by the system) with `config`; resolves once it
 * logs "ready", with the TCP address it bound. */
async function startDaemon(dir, config) {
  fs.mkdirSync(dir, { recursive: true });
  fs.writeFileSync(path.join(dir, "budgetd.toml"), config);
  const args = ["-m", "budgetd", "--socket", path.join(dir, "budgetd.sock")];
  args.push("--tcp", "127.0.0.1:0", "--config", path.join(dir, "budgetd.toml"));
  args.push("--state-dir", path.join(dir, "state"), "--log-format", "json");
  const stdio = ["ignore", "pipe", "pipe"];
  const child = spawn(PYTHON, args, { cwd: REPO_ROOT, env: daemonEnv(), stdio });
  let output = "";
  const ready = new Promise((resolve, reject) => {
    const fail = () => reject(new Error(`budgetd not ready:\n${output}`));
    const timer = setTimeout(fail, READY_WAIT_MS);
    const read = (chunk) => {
      output += chunk;
      for (const line of output.split("\n")) {
        let record = null;
        try {
          record = JSON.parse(line);
        } catch {
          continue;
        }
        if (record.event === "ready") {
          clearTimeout(timer);
          resolve(record);
        }
      }
    };
    child.stdout.setEncoding("utf8").on("data", read);
    child.stderr.setEncoding("utf8").on("data", read);
    child.on("close", (code) => {
      clearTimeout(timer);
      reject(new Error(`budgetd exited (${code}) before ready:\n${output}`));
    });
  });
  const record = await ready;
  const closed = new Promise((resolve) => child.on("close", resolve));
  return {
    tcp: record.tcp,
    localhost: record.tcp.replace("127.0.0.1", "localhost"), // the certificate's name
    async stop() {
      if (child.exitCode === null && child.signalCode === null) child.kill("SIGKILL");
      await closed;
    },
  };
}

async function rejection(promise) {
  try {
    await promise;
  } catch (error) {
    return error;
  }
  assert.fail("the call succeeded; an error was expected");
}

function consume(client, labels = LABELS) {
  return client.budget.Consume({ request_id: randomUUID(), labels, usage: USAGE });
}

describe("the Node client against a budgetd that requires credentials", () => {
  let dir;
  let certs;
  let plain; // tokens on plaintext loopback TCP
  let secure; // TLS, tokens
  let mtls; // client certificates required; tokens too
  const clients = [];
  const open = (target, options) => {
    const client = connect(target, { env: {}, ...options });
    clients.push(client);
    return client;
  };

  before(async () => {
    dir = fs.mkdtempSync(path.join(os.tmpdir(), "budgetd-node-auth-"));
    certs = makeCertificates(dir);
    tokenFile(path.join(dir, "tokens.toml"));
    const tokens = `[auth]\ntoken_files = ["${path.join(dir, "tokens.toml")}"]\n`;
    const { cert, key } = certs.server;
    const tlsFiles = `[tls]\ncert_file = "${cert}"\nkey_file = "${key}"\n`;
    const clientCa = `client_ca_file = "${certs.ca}"\n`;
    const mapped = `[[auth.certificates]]\nidentity = "${PLANNER}"\nrole = "agent"\n`;
    [plain, secure, mtls] = await Promise.all([
      startDaemon(path.join(dir, "plain"), tokens),
      startDaemon(path.join(dir, "tls"), tokens + tlsFiles),
      startDaemon(path.join(dir, "mtls"), tokens + mapped + tlsFiles + clientCa),
    ]);
  });

  after(async () => {
    for (const client of clients) client.close();
    await Promise.all([plain?.stop(), secure?.stop(), mtls?.stop()]);
    if (dir) fs.rmSync(dir, { recursive: true, force: true });
  });

  it("spends with a token from the option, a file or $BUDGETD_TOKEN", async () => {
    const agent = open(plain.tcp, { token: TOKENS.agent });
    const answer = await consume(agent);
    assert.ok(answer.ledgers.some((l) => l.key === "per-thread{thread=t-auth}"));
    const file = writeSecret(path.join(dir, "reader.token"), `${TOKENS.reader}\n`);
    const reader = open(plain.tcp, { tokenFile: file });
    const { ledger } = await reader.budget.GetLedger({ key: "per-thread{thread=t-auth}" });
    assert.equal(ledger.totals.total_tokens, 120);
    const fromEnv = open(plain.tcp, { env: { BUDGETD_TOKEN: TOKENS.agent } });
    await consume(fromEnv);
  });

  it("bad tokens: UNAUTHENTICATED; a reader's Consume: PERMISSION_DENIED; sent once", async () => {
    // Through a counting proxy: it sees every attempt the channel makes, and its first
    // UNAVAILABLE shows that the channel does retry what it may.
    let refuseFirst = true;
    const proxy = await startConsumeProxy(path.join(dir, "proxy.sock"), plain.tcp, () => {
      const refuse = refuseFirst;
      refuseFirst = false;
      return refuse;
    });
    try {
      const agent = open(proxy.target, { token: TOKENS.agent });
      await consume(agent);
      assert.equal(proxy.attempts.length, 2, "UNAVAILABLE, then the retry went through");
      assert.deepEqual(proxy.attempts[1], `Bearer ${TOKENS.agent}`);

      for (const [options, code, details] of [
        [{ token: "tok-typo" }, Status.UNAUTHENTICATED, /no token file lists its sha256/],
        [{}, Status.UNAUTHENTICATED, /a TCP call needs 'authorization: Bearer <token>'/],
        [{ token: TOKENS.reader }, Status.PERMISSION_DENIED, /has the reader role/],
      ]) {
        const before = proxy.attempts.length;
        const error = await rejection(consume(open(proxy.target, options)));
        assert.equal(error.code, code, error.details);
        assert.match(error.details, details);
        assert.equal(proxy.attempts.length, before + 1, "sent once, never retried");
      }
    } finally {
      await proxy.close();
    }
  });

  it("the Subscribe stream carries the token", async () => {
    const reader = open(plain.tcp, { token: TOKENS.reader });
    const stream = reader.raw.budget.Subscribe({ after_seq: 0, selector: { thread: "t-auth" } });
    const first = await new Promise((resolve, reject) => {
      stream.once("data", resolve);
      stream.once("error", reject);
    });
    stream.cancel();
    stream.on("error", () => {}); // the CANCELLED that cancel() ends it with
    assert.equal(first.event.labels.thread, "t-auth");

    const stranger = open(plain.tcp, { token: "tok-typo" });
    const refused = stranger.raw.budget.Subscribe({});
    const error = await new Promise((resolve) => refused.once("error", resolve));
    assert.equal(error.code, Status.UNAUTHENTICATED);
  });

  it("TLS: the daemon's CA verifies it, the token goes over the encrypted connection", async () => {
    const agent = open(secure.localhost, { token: TOKENS.agent, tls: { caFile: certs.ca } });
    await consume(agent, { ...LABELS, thread: "t-tls" });
    const ca = fs.readFileSync(certs.ca); // PEM text inline, by address with the name
    const reader = open(secure.tcp, { token: TOKENS.reader, tls: { ca, serverName: "localhost" } });
    const { ledger } = await reader.budget.GetLedger({ key: "per-thread{thread=t-tls}" });
    assert.equal(ledger.totals.total_tokens, 120);
    const systemRoots = open(secure.localhost, { token: TOKENS.agent, tls: true });
    const wrong = await rejection(consume(systemRoots));
    assert.equal(wrong.code, Status.UNAVAILABLE, "the system's roots do not know the test CA");
    const plaintext = await rejection(consume(open(secure.localhost, { token: TOKENS.agent })));
    assert.equal(plaintext.code, Status.UNAVAILABLE, "no plaintext on a TLS listener");
  });

  it("mTLS: a client certificate mapped to a role; a token decides for its call", async () => {
    const tls = { caFile: certs.ca, certFile: certs.planner.cert, keyFile: certs.planner.key };
    const planner = open(mtls.localhost, { tls });
    await consume(planner); // the certificate is an agent
    const denied = await rejection(planner.admin.ListPolicies({}));
    assert.equal(denied.code, Status.PERMISSION_DENIED);
    assert.match(denied.details, /certificate 'spiffe:\/\/acme\/planner' has the agent role/);

    // By address, with the certificate's name; an admin token on the same kind of connection.
    const admin = open(mtls.tcp, { token: TOKENS.admin, tls: { ...tls, serverName: "localhost" } });
    const { policies } = await admin.admin.ListPolicies({});
    assert.ok(policies.length > 0);

    // The same from the environment, with the PEM files' paths.
    const fromEnv = open(mtls.localhost, {
      env: {
        BUDGETD_TLS_CA: certs.ca,
        BUDGETD_TLS_CERT: certs.planner.cert,
        BUDGETD_TLS_KEY: certs.planner.key,
      },
    });
    await consume(fromEnv);

    // Without a client certificate there is no connection at all.
    const anonymous = open(mtls.localhost, {
      tls: { caFile: certs.ca },
      channelOptions: { "grpc.enable_retries": 0 },
    });
    const refused = await rejection(consume(anonymous));
    assert.equal(refused.code, Status.UNAVAILABLE);
  });

  it("the client's own mistakes throw a CredentialsError naming the file", () => {
    const missing = path.join(dir, "missing.token");
    const empty = writeSecret(path.join(dir, "empty.token"), "\n");
    const notPem = writeSecret(path.join(dir, "not.pem"), "hello\n");
    const cases = [
      [{ tokenFile: missing }, `tokenFile ${missing}: cannot read: ENOENT`, missing],
      [{ tokenFile: empty }, `tokenFile ${empty}: the token is empty`, empty],
      [{ token: "two words" }, "printable ASCII without spaces", null],
      [{ token: "a", tokenFile: missing }, "give token or tokenFile, not both", null],
      [{ tls: { caFile: notPem } }, `tls.caFile ${notPem}: not a PEM file`, notPem],
      [{ tls: { certFile: certs.planner.cert } }, "needs both cert and key", null],
      [
        { tls: { certFile: certs.planner.cert, keyFile: certs.server.key } },
        `tls.keyFile ${certs.server.key}: not the key of ${certs.planner.cert}`,
        certs.server.key,
      ],
      [{ env: { BUDGETD_TOKEN: "a", BUDGETD_TOKEN_FILE: missing } }, "are both set", null],
    ];
    for (const [options, message, file] of cases) {
      assert.throws(
        () => connect("127.0.0.1:1", { env: {}, ...options }),
        (error) =>
          error instanceof CredentialsError && error.message.includes(message) && error.path === file,
        JSON.stringify(options),
      );
    }
  });

  it("a token never goes in plaintext beyond loopback", () => {
    const remote = ["10.0.0.7:50051", "budget.example.com:50051", "dns:///example.com:1", "xds:///b"];
    for (const target of remote) {
      assert.equal(isLocal(target), false, target);
      assert.throws(
        () => connect(target, { token: "tok", env: {} }),
        (error) =>
          error instanceof CredentialsError &&
          error.message.includes(`refusing to send the bearer token (token) in plaintext to ${target}`),
      );
      connect(target, { env: {} }).close(); // no token: nothing to leak
    }
    for (const target of ["127.0.0.1:1", "localhost:1", "[::1]:1", "unix:/tmp/x.sock"]) {
      assert.equal(isLocal(target), true, target);
      connect(target, { token: "tok", env: {} }).close();
    }
  });
});

/**
 * A proxy for BudgetService/Consume in front of `upstream`, passing bytes and metadata
 * through. `refuse(attempt)` true: answer UNAVAILABLE without forwarding. Records the
 * authorization header of each attempt.
 */
async function startConsumeProxy(socketPath, upstreamTarget, refuse) {
  const { BudgetService } = loadBudgetPackage();
  const consumeMethod = BudgetService.service.Consume;
  const bytes = (buffer) => buffer;
  const upstream = new grpc.Client(upstreamTarget, grpc.credentials.createInsecure());
  const attempts = [];
  const server = new grpc.Server();
  server.addService(
    { Consume: { ...consumeMethod, requestDeserialize: bytes, responseSerialize: bytes } },
    {
      Consume(call, callback) {
        attempts.push(call.metadata.get("authorization")[0] ?? null);
        if (refuse(attempts.length)) {
          return callback({ code: Status.UNAVAILABLE, details: "proxy: refused once" });
        }
        const { path: method } = consumeMethod;
        upstream.makeUnaryRequest(method, bytes, bytes, call.request, call.metadata, callback);
      },
    },
  );
  await new Promise((resolve, reject) =>
    server.bindAsync(`unix:${socketPath}`, grpc.ServerCredentials.createInsecure(), (error) =>
      error ? reject(error) : resolve(),
    ),
  );
  return {
    attempts,
    target: `unix:${socketPath}`,
    async close() {
      upstream.close();
      await new Promise((resolve) => server.tryShutdown(resolve));
    },
  };
}
