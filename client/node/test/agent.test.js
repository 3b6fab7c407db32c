// End-to-end test of the Node example against the REAL daemon (python -m budgetd),
// started here on a private socket and state dir with its embedded default policies.
//
//   cd client/node && npm ci && npm test
//
// The daemon's Python: $BUDGETD_PYTHON, else the repo's .venv (`make setup` makes it).

import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { randomUUID } from "node:crypto";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { after, before, describe, it } from "node:test";
import { setTimeout as sleep } from "node:timers/promises";
import { fileURLToPath } from "node:url";

import grpc from "@grpc/grpc-js";
import protoLoader from "@grpc/proto-loader";

import { DEFAULT_ESTIMATE, FOLLOW_UP_USAGE, pretendModelCall, runAgent } from "../agent.js";
import { LOADER_OPTIONS, Status, connect, loadBudgetPackage } from "../budgetd.js";

const NODE_DIR = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "..");
const REPO_ROOT = path.resolve(NODE_DIR, "../..");
const PYTHON = pythonPath();

const READY_ATTEMPTS = 300; // × READY_INTERVAL_MS: about 30 s, for a loaded CI machine
const READY_INTERVAL_MS = 100;
const EXIT_WAIT_MS = 15_000; // the daemon's default drain grace is 5 s

function pythonPath() {
  const chosen = process.env.BUDGETD_PYTHON;
  if (!chosen) return path.resolve(NODE_DIR, "../../.venv/bin/python");
  return chosen.includes(path.sep) ? path.resolve(chosen) : chosen; // bare names: PATH
}

/** The environment of the daemon: ours (PYTHONPATH included) without the BUDGETD_*
 * settings, which the daemon would read (and BUDGETD_PYTHON, which it would refuse as
 * an unknown variable). BUDGETD_CORE is the test suite's core switch: kept. */
function daemonEnv() {
  const env = { ...process.env, PYTHONUNBUFFERED: "1" };
  for (const name of Object.keys(env)) {
    if (name.startsWith("BUDGETD_") && name !== "BUDGETD_CORE") delete env[name];
  }
  return env;
}

function tokens(usage) {
  return usage.input_tokens + usage.output_tokens;
}

function healthClient(target) {
  const definition = protoLoader.loadSync(path.join(NODE_DIR, "health.proto"), LOADER_OPTIONS);
  const { Health } = grpc.loadPackageDefinition(definition).grpc.health.v1;
  // Reconnect quickly while the socket does not exist yet (grpc-js backs off from 1 s).
  return new Health(target, grpc.credentials.createInsecure(), {
    "grpc.initial_reconnect_backoff_ms": 50,
    "grpc.max_reconnect_backoff_ms": READY_INTERVAL_MS,
  });
}

function healthCheck(client, deadlineMs) {
  return new Promise((resolve, reject) => {
    const deadline = new Date(Date.now() + deadlineMs);
    client.Check({ service: "" }, { deadline }, (error, response) =>
      error ? reject(error) : resolve(response),
    );
  });
}

/**
 * A proxy in front of the daemon for BudgetService/Consume, passing bytes through
 * unchanged. `decide(attempt)` says what each attempt gets: "refuse" (UNAVAILABLE, not
 * forwarded), "lose" (forwarded, applied by the daemon, then UNAVAILABLE instead of
 * its answer) or "forward". Records each attempt's request_id.
 */
async function startConsumeProxy(socketPath, upstreamTarget, decide) {
  const consume = loadBudgetPackage().BudgetService.service.Consume;
  const bytes = (buffer) => buffer;
  const upstream = new grpc.Client(upstreamTarget, grpc.credentials.createInsecure());
  const attempts = [];
  const server = new grpc.Server();
  const definition = {
    Consume: { ...consume, requestDeserialize: bytes, responseSerialize: bytes },
  };
  server.addService(definition, {
    Consume(call, callback) {
      attempts.push(consume.requestDeserialize(call.request).request_id);
      const action = decide(attempts.length);
      const details = `proxy: attempt ${attempts.length}`;
      const unavailable = { code: Status.UNAVAILABLE, details };
      if (action === "refuse") return callback(unavailable);
      upstream.makeUnaryRequest(consume.path, bytes, bytes, call.request, (error, answer) => {
        if (error) return callback(error);
        return action === "lose" ? callback(unavailable) : callback(null, answer);
      });
    },
  });
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

async function rejection(promise) {
  try {
    await promise;
  } catch (error) {
    return error;
  }
  assert.fail("the call succeeded; an error was expected");
}

describe("the Node example agent against the real budgetd", () => {
  let dir;
  let target;
  let socketPath;
  let daemon;
  let exited; // resolves to { code, signal } once the daemon is gone and its pipes closed
  let stderr = "";
  let client;
  let summary;
  let agentKey; // the per-agent ledger, copied from a LedgerStatus

  const daemonRunning = () => daemon && daemon.exitCode === null && daemon.signalCode === null;

  function waitForExit(ms) {
    let timer;
    const timeout = new Promise((resolve) => {
      timer = setTimeout(resolve, ms, null);
    });
    return Promise.race([exited, timeout]).finally(() => clearTimeout(timer));
  }

  before(async () => {
    dir = fs.mkdtempSync(path.join(os.tmpdir(), "budgetd-node-"));
    socketPath = path.join(dir, "budgetd.sock");
    target = `unix:${socketPath}`;
    if (PYTHON.includes(path.sep)) {
      assert.ok(
        fs.existsSync(PYTHON),
        `no Python at ${PYTHON}: run \`make setup\` at the repo root or set BUDGETD_PYTHON`,
      );
    }
    const args = ["-m", "budgetd", "--socket", socketPath, "--no-tcp"];
    args.push("--state-dir", path.join(dir, "state"), "--log-format", "json");
    daemon = spawn(PYTHON, args, {
      cwd: REPO_ROOT,
      env: daemonEnv(),
      stdio: ["ignore", "pipe", "pipe"],
    });
    daemon.stdout.setEncoding("utf8").on("data", (chunk) => (stderr += chunk));
    daemon.stderr.setEncoding("utf8").on("data", (chunk) => (stderr += chunk));
    exited = new Promise((resolve) => {
      daemon.on("error", (error) => resolve({ code: null, signal: null, error }));
      daemon.on("close", (code, signal) => resolve({ code, signal }));
    });

    const health = healthClient(target);
    try {
      for (let attempt = 1; ; attempt++) {
        if (!daemonRunning()) {
          const gone = await exited;
          assert.fail(
            `budgetd exited before serving (code ${gone.code}, signal ${gone.signal}` +
              `${gone.error ? `, ${gone.error.message}` : ""}); its output:\n${stderr}`,
          );
        }
        const answer = await healthCheck(health, READY_INTERVAL_MS).catch(() => null);
        if (answer?.status === "SERVING") break;
        if (attempt >= READY_ATTEMPTS) {
          assert.fail(`budgetd not SERVING after ${attempt} health checks; its output:\n${stderr}`);
        }
        await sleep(READY_INTERVAL_MS);
      }
    } finally {
      health.close();
    }
    client = connect(target);
  });

  after(async () => {
    client?.close();
    if (daemonRunning()) {
      daemon.kill("SIGKILL");
      await waitForExit(EXIT_WAIT_MS);
    }
    if (dir) fs.rmSync(dir, { recursive: true, force: true });
  });

  it("runs the agent: reservation granted, actual usage committed, follow-up consumed", async () => {
    const lines = [];
    let threadAtClose = null;
    summary = await runAgent(target, {
      log: (line) => lines.push(line),
      beforeClose: async (s) => {
        assert.equal(s.threadLedgers.length, 1, "one ledger is split by thread (per-thread)");
        const { ledger } = await client.budget.GetLedger({ key: s.threadLedgers[0].key });
        threadAtClose = ledger;
      },
    });

    // One printed line per step.
    const steps = lines.map((line) => line.split(" ")[0]);
    assert.deepEqual(steps, ["open-run", "reserve", "model", "commit", "consume", "ledger", "close-run"]);

    assert.equal(summary.opened, true);
    assert.equal(summary.granted, true);
    assert.equal(summary.modelCalled, true);
    assert.equal(summary.responses.reserve.decision, "DECISION_ALLOW");
    assert.match(summary.reservationId, /\S/);
    assert.equal(summary.responses.reserve.replayed, false);

    const committed = summary.committed;
    const consumed = summary.consumed.usage;
    assert.deepEqual(committed, pretendModelCall(DEFAULT_ESTIMATE));
    assert.deepEqual(consumed, FOLLOW_UP_USAGE);
    const commit = summary.responses.commit;
    const consume = summary.responses.consume;
    assert.equal(commit.cost_known, true, "gpt-4o-mini is in the default price table");
    assert.equal(consume.cost_known, true);
    assert.ok(commit.cost_micro_usd > 0);
    assert.deepEqual(commit.overruns, [], "the actual usage is below the estimate");

    // The thread's ledger, read with GetLedger while the run was still open, holds
    // exactly the committed and consumed usage, and nothing is left reserved.
    const expectedTokens = tokens(committed) + tokens(consumed);
    assert.ok(threadAtClose, "the beforeClose hook ran");
    assert.equal(threadAtClose.policy, "per-thread");
    assert.deepEqual(threadAtClose.labels, { thread: summary.labels.thread });
    assert.equal(threadAtClose.totals.total_tokens, expectedTokens);
    assert.equal(threadAtClose.totals.input_tokens, committed.input_tokens + consumed.input_tokens);
    assert.equal(threadAtClose.totals.output_tokens, committed.output_tokens + consumed.output_tokens);
    assert.equal(threadAtClose.totals.requests, 2);
    assert.equal(threadAtClose.totals.cost_micro_usd, commit.cost_micro_usd + consume.cost_micro_usd);
    assert.equal(threadAtClose.reservations, 0);
    assert.equal(threadAtClose.open_runs, 1);
    const [cap] = threadAtClose.dimensions;
    assert.equal(cap.dimension, "DIMENSION_TOTAL_TOKENS");
    assert.equal(cap.limit, 100_000);
    assert.equal(cap.used, expectedTokens);
    assert.equal(cap.reserved, 0);
    assert.equal(cap.remaining, 100_000 - expectedTokens);

    // The run's final totals are the sum of the committed and consumed usage.
    const totals = summary.totals;
    assert.equal(summary.closed, true);
    assert.equal(totals.total_tokens, expectedTokens);
    assert.equal(totals.input_tokens, committed.input_tokens + consumed.input_tokens);
    assert.equal(totals.output_tokens, committed.output_tokens + consumed.output_tokens);
    assert.equal(totals.requests, 2);
    assert.equal(totals.cost_micro_usd, commit.cost_micro_usd + consume.cost_micro_usd);
    assert.equal(totals.latency_ms_sum, committed.latency_ms + consumed.latency_ms);
    const closedKeys = summary.responses.closeRun.closed_ledgers.map((l) => l.key);
    assert.deepEqual(closedKeys, [threadAtClose.key], "per-thread closes with the run");
    assert.equal(summary.responses.closeRun.closed_ledgers[0].totals.total_tokens, expectedTokens);
  });

  it("after the run: the thread ledger is gone, the per-agent ledger kept the usage", async () => {
    assert.ok(summary?.closed, "the agent run above completed");
    const threadKey = summary.threadLedgers[0].key;
    const gone = await rejection(client.budget.GetLedger({ key: threadKey }));
    assert.equal(gone.code, Status.NOT_FOUND);

    const { ledgers } = await client.budget.ListLedgers({
      policy: "per-agent",
      selector: { agent: "node-example" },
    });
    assert.equal(ledgers.length, 1);
    agentKey = ledgers[0].key;
    const { ledger } = await client.budget.GetLedger({ key: agentKey });
    assert.equal(ledger.totals.total_tokens, summary.totals.total_tokens);
    assert.equal(ledger.totals.requests, 2);
  });

  it("a replayed request_id returns the stored answer and changes no totals", async () => {
    assert.ok(agentKey, "the per-agent ledger was found above");
    const before = (await client.budget.GetLedger({ key: agentKey })).ledger;
    const replay = await client.budget.Consume(summary.consumed); // same request_id, same call
    assert.equal(replay.replayed, true);
    assert.equal(replay.cost_micro_usd, summary.responses.consume.cost_micro_usd);
    assert.deepEqual(
      replay.ledgers.map((l) => l.key),
      summary.responses.consume.ledgers.map((l) => l.key),
    );
    const afterReplay = (await client.budget.GetLedger({ key: agentKey })).ledger;
    assert.deepEqual(afterReplay.totals, before.totals);
    const threadKey = summary.threadLedgers[0].key;
    const stillGone = await rejection(client.budget.GetLedger({ key: threadKey }));
    assert.equal(stillGone.code, Status.NOT_FOUND, "a replay does not recreate the thread ledger");
  });

  it("an invalid label key is INVALID_ARGUMENT naming the field", async () => {
    const before = (await client.budget.GetLedger({ key: agentKey })).ledger;
    const error = await rejection(
      client.budget.Consume({
        request_id: randomUUID(),
        labels: { agent: "node-example", "Not A Key": "x" },
        usage: FOLLOW_UP_USAGE,
      }),
    );
    assert.equal(error.code, 3);
    assert.equal(error.code, Status.INVALID_ARGUMENT);
    assert.match(error.details, /labels\['Not A Key'\]/, "the message names the field");
    assert.match(error.details, /\[a-z0-9_\.-\]\{1,64\}/, "and the rule");
    const afterError = (await client.budget.GetLedger({ key: agentKey })).ledger;
    assert.deepEqual(afterError.totals, before.totals);
  });

  it("a DENY from Reserve is handled: blocker printed, no model call, nothing recorded", async () => {
    const before = (await client.budget.GetLedger({ key: agentKey })).ledger;
    const lines = [];
    const estimate = { ...DEFAULT_ESTIMATE, input_tokens: 150_000 }; // per-thread caps 100k
    const denied = await runAgent(target, { estimate, log: (line) => lines.push(line) });
    assert.equal(denied.opened, true);
    assert.equal(denied.granted, false);
    assert.equal(denied.modelCalled, false);
    assert.equal(denied.committed, null);
    assert.equal(denied.responses.reserve.decision, "DECISION_DENY");
    assert.equal(denied.responses.reserve.reservation_id, "");
    const blocker = denied.blockers.find((b) => b.policy === "per-thread");
    assert.ok(blocker, `a per-thread blocker in ${JSON.stringify(denied.blockers)}`);
    assert.equal(blocker.dimension, "DIMENSION_TOTAL_TOKENS");
    assert.equal(blocker.enforcement, "ENFORCEMENT_HARD");
    assert.equal(blocker.limit, 100_000);
    assert.equal(blocker.requested, tokens(estimate));
    assert.equal(blocker.shortfall, tokens(estimate) - 100_000);
    assert.ok(lines.some((line) => line.startsWith("reserve   DENY per-thread")), lines.join("\n"));
    assert.ok(lines.some((line) => line.startsWith("model     skipped")), lines.join("\n"));
    assert.equal(denied.closed, true);
    assert.equal(denied.totals.requests, 0);
    assert.equal(denied.totals.total_tokens, 0);
    // No usage recorded; only the (denied-call) run's wall clock is added, as for any run.
    const afterDeny = (await client.budget.GetLedger({ key: agentKey })).ledger;
    const { run_duration_ms: ranBefore, ...usageBefore } = before.totals;
    const { run_duration_ms: ranAfter, ...usageAfter } = afterDeny.totals;
    assert.deepEqual(usageAfter, usageBefore);
    assert.equal(ranAfter - ranBefore, denied.totals.run_duration_ms);
  });

  describe("retries: the channel's, from protos/budgetd/v1/service_config.json", () => {
    const usage = FOLLOW_UP_USAGE;
    let proxy = null;
    let proxied = null;

    let proxies = 0;

    async function through(decide, channelOptions = {}) {
      proxies += 1;
      proxy = await startConsumeProxy(path.join(dir, `proxy-${proxies}.sock`), target, decide);
      proxied = connect(proxy.target, { channelOptions });
    }

    async function agentTokens() {
      return (await client.budget.GetLedger({ key: agentKey })).ledger.totals.total_tokens;
    }

    const consumeRequest = () => ({
      request_id: randomUUID(),
      labels: { agent: "node-example", thread: randomUUID().slice(0, 8) },
      usage,
    });

    async function closeProxy() {
      proxied?.close();
      await proxy?.close();
      proxied = proxy = null;
    }

    it("UNAVAILABLE twice: sent a third time, the same request, applied once", async (t) => {
      t.after(closeProxy);
      await through((attempt) => (attempt <= 2 ? "refuse" : "forward"));
      const before = await agentTokens();
      const request = consumeRequest();
      const answer = await proxied.budget.Consume(request);
      assert.deepEqual(proxy.attempts, Array(3).fill(request.request_id));
      assert.equal(answer.replayed, false);
      assert.equal((await agentTokens()) - before, tokens(usage));
    });

    it("an applied answer lost: the retry gets the stored answer, counted once", async (t) => {
      t.after(closeProxy);
      await through((attempt) => (attempt === 1 ? "lose" : "forward"));
      const before = await agentTokens();
      const request = consumeRequest();
      const answer = await proxied.budget.Consume(request);
      assert.deepEqual(proxy.attempts, Array(2).fill(request.request_id));
      assert.equal(answer.replayed, true, "the daemon had applied the first attempt");
      assert.equal((await agentTokens()) - before, tokens(usage));
    });

    it("with retries off, the first UNAVAILABLE is final (the config did the retrying)", async (t) => {
      t.after(closeProxy);
      await through(() => "refuse", { "grpc.enable_retries": 0 });
      const error = await rejection(proxied.budget.Consume(consumeRequest()));
      assert.equal(error.code, Status.UNAVAILABLE);
      assert.equal(proxy.attempts.length, 1);
    });

    it("a daemon that keeps answering UNAVAILABLE: 5 attempts, then the error", async (t) => {
      t.after(closeProxy);
      await through(() => "refuse");
      const error = await rejection(proxied.budget.Consume(consumeRequest()));
      assert.equal(error.code, Status.UNAVAILABLE);
      assert.equal(proxy.attempts.length, 5, "maxAttempts of service_config.json");
    });
  });

  it("SIGTERM: the daemon drains and exits 0", async (t) => {
    client.close();
    client = null;
    assert.ok(daemonRunning(), `the daemon is still up; its output:\n${stderr}`);
    const started = Date.now();
    daemon.kill("SIGTERM");
    const gone = await waitForExit(EXIT_WAIT_MS);
    assert.ok(gone, `no exit ${EXIT_WAIT_MS} ms after SIGTERM; its output:\n${stderr}`);
    t.diagnostic(`exited ${Date.now() - started} ms after SIGTERM`);
    assert.deepEqual({ code: gone.code, signal: gone.signal }, { code: 0, signal: null }, stderr);
    assert.equal(fs.existsSync(socketPath), false, "the socket is removed on exit");

    // --log-format json: one JSON object per line, from "ready" to "stopped".
    const events = stderr
      .split("\n")
      .filter((line) => line.trim())
      .map((line) => JSON.parse(line));
    const ready = events.find((e) => e.event === "ready");
    t.diagnostic(`daemon core: ${ready?.core}, policies: ${ready?.policies}`);
    const names = events.map((e) => e.event);
    for (const event of ["ready", "signal", "draining", "stopped"]) {
      assert.ok(names.includes(event), `"${event}" in ${JSON.stringify(names)}`);
    }
  });
});
