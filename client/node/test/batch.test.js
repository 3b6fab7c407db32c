// Goal: the Node client sends batches. Against the REAL daemon (python -m budgetd, its
// embedded default policies, max_batch_operations 256): `batch()` answers a mixed batch
// in order, each operation as its own RPC would; a bad operation fails alone with its
// code and a message naming operations[i]; a batch of none or too many operations is
// refused whole before it is sent (the client's bound) or by the daemon (when the
// client's bound is raised past the daemon's), nothing of it applied. `batchStream()`
// answers several batches in order with at most maxInFlight sent ahead, goes on after a
// batch refused whole, and fails every pending send clearly when the stream breaks.
//
// Method: one daemon on a private socket and state dir; each test spends on its own
// thread label, so its per-thread ledger holds only its own usage. No timing: each
// assertion waits for an answer or an end of stream.

import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { randomUUID } from "node:crypto";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { after, before, describe, it } from "node:test";
import { fileURLToPath } from "node:url";

import {
  BatchOperationError,
  DEFAULT_MAX_BATCH_OPERATIONS,
  Status,
  StatusError,
  connect,
} from "../budgetd.js";

const NODE_DIR = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "..");
const REPO_ROOT = path.resolve(NODE_DIR, "../..");
const PYTHON = process.env.BUDGETD_PYTHON
  ? path.resolve(process.env.BUDGETD_PYTHON)
  : path.resolve(REPO_ROOT, ".venv/bin/python");
const READY_WAIT_MS = 60_000; // a loaded CI machine starts slowly; the wait ends at "ready"
const AGENT = "node-batch";
const USAGE = Object.freeze({ input_tokens: 100, output_tokens: 20, model: "gpt-4o-mini" });

/** The daemon's environment: ours without BUDGETD_* (it would read them), core kept. */
function daemonEnv() {
  const env = { ...process.env, PYTHONUNBUFFERED: "1" };
  for (const name of Object.keys(env)) {
    if (name.startsWith("BUDGETD_") && name !== "BUDGETD_CORE") delete env[name];
  }
  return env;
}

/** A daemon on `socketPath`; resolves once it logs "ready". */
async function startDaemon(dir, socketPath) {
  const args = ["-m", "budgetd", "--socket", socketPath, "--no-tcp"];
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
  const exited = new Promise((resolve) => child.on("close", resolve));
  await ready;
  return {
    output: () => output,
    async stop() {
      if (child.exitCode === null && child.signalCode === null) child.kill("SIGKILL");
      await exited;
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

const labels = (thread) => ({ agent: AGENT, thread });
const consume = (thread, usage = USAGE) => ({
  consume: { request_id: randomUUID(), labels: labels(thread), usage },
});
const check = (thread) => ({ check: { labels: labels(thread), estimate: USAGE } });
const threadOf = (response) => response.ledgers.find((l) => l.policy === "per-thread");

describe("batches from the Node client against the real budgetd", () => {
  let dir;
  let daemon;
  let target;
  let client;

  /** The input tokens a thread's per-thread ledger holds (0 when it does not exist). */
  async function threadInput(thread) {
    const { ledgers } = await client.budget.ListLedgers({
      policy: "per-thread",
      selector: { thread },
    });
    assert.ok(ledgers.length <= 1, JSON.stringify(ledgers));
    return ledgers[0]?.totals.input_tokens ?? 0;
  }

  before(async () => {
    dir = fs.mkdtempSync(path.join(os.tmpdir(), "budgetd-node-batch-"));
    const socketPath = path.join(dir, "budgetd.sock");
    target = `unix:${socketPath}`;
    daemon = await startDaemon(dir, socketPath);
    client = connect(target);
  });

  after(async () => {
    client?.close();
    await daemon?.stop();
    if (dir) fs.rmSync(dir, { recursive: true, force: true });
  });

  describe("batch()", () => {
    it("answers a mixed batch in order, each operation as its own RPC", async () => {
      const thread = randomUUID().slice(0, 8);
      const reserve = () => ({
        reserve: { request_id: randomUUID(), labels: labels(thread), estimate: USAGE },
      });
      const operations = [check(thread), reserve(), consume(thread), check(thread), reserve()];
      const first = await client.batch(operations);
      assert.equal(first.length, 5);
      for (const result of first) assert.ok(!(result instanceof Error), String(result));
      const [before, held, consumed, seen, kept] = first;
      assert.equal(before.decision, "DECISION_ALLOW");
      assert.equal(threadOf(before).totals.input_tokens, 0, "the first check is before it");
      assert.equal(held.decision, "DECISION_ALLOW");
      assert.match(held.reservation_id, /\S/);
      assert.equal(consumed.cost_known, true);
      assert.equal(consumed.replayed, false);
      assert.ok(consumed.cost_micro_usd > 0);
      assert.equal(threadOf(seen).totals.input_tokens, USAGE.input_tokens, "the second sees it");
      assert.notEqual(kept.reservation_id, held.reservation_id);

      const actual = { ...USAGE, input_tokens: 80 };
      const second = await client.batch([
        { commit: { request_id: randomUUID(), reservation_id: held.reservation_id, actual } },
        { release: { request_id: randomUUID(), reservation_id: kept.reservation_id } },
      ]);
      const [committed, released] = second;
      assert.equal(committed.replayed, false);
      assert.equal(committed.cost_known, true);
      assert.equal(released.released, true);
      assert.equal(await threadInput(thread), USAGE.input_tokens + actual.input_tokens);
    });

    it("a bad operation fails alone, its code and a message naming operations[i]", async () => {
      const thread = randomUUID().slice(0, 8);
      const missing = { request_id: randomUUID(), reservation_id: "no-such", actual: USAGE };
      const results = await client.batch([
        consume(thread),
        consume(thread, { ...USAGE, input_tokens: -1 }),
        {},
        { commit: missing },
        consume(thread),
      ]);
      assert.equal(results.length, 5);
      const failed = results.map((result) => result instanceof BatchOperationError);
      assert.deepEqual(failed, [false, true, true, true, false]);

      const [, bad, empty, unknown] = results;
      assert.ok(bad instanceof StatusError && bad instanceof Error);
      assert.equal(bad.code, Status.INVALID_ARGUMENT);
      assert.equal(bad.index, 1);
      assert.equal(bad.operation, "consume");
      assert.match(bad.details, /^operations\[1\]\.consume\.usage\.input_tokens: /);
      assert.match(bad.message, /^3 INVALID_ARGUMENT: operations\[1\]\.consume\./);
      assert.equal(empty.code, Status.INVALID_ARGUMENT);
      assert.equal(empty.operation, null);
      assert.match(empty.details, /^operations\[2\]\.operation: one of check/);
      assert.equal(unknown.code, Status.NOT_FOUND);
      assert.equal(unknown.operation, "commit");
      assert.match(unknown.details, /^operations\[3\]\.commit: reservation 'no-such'/);
      assert.equal(results[4].replayed, false);
      assert.equal(await threadInput(thread), 2 * USAGE.input_tokens, "the good ones only");
    });

    it("none or too many operations: refused whole by the client, nothing sent", async () => {
      assert.equal(client.maxBatchOperations, DEFAULT_MAX_BATCH_OPERATIONS);
      const thread = randomUUID().slice(0, 8);
      const over = Array.from({ length: 257 }, () => consume(thread));
      const refused = await rejection(client.batch(over));
      assert.ok(refused instanceof StatusError);
      assert.equal(refused.code, Status.INVALID_ARGUMENT);
      assert.equal(
        refused.details,
        "operations: must hold 1..256 operations (the client's maxBatchOperations; " +
          "nothing was sent); got 257",
      );
      assert.equal(refused.sent, false);
      const none = await rejection(client.batch([]));
      assert.equal(none.code, Status.INVALID_ARGUMENT);
      assert.match(none.details, /got 0$/);
      assert.equal(await threadInput(thread), 0);

      // The bound is the client's own: held to 2, it refuses 3 the daemon would take.
      const small = connect(target, { maxBatchOperations: 2 });
      try {
        const three = await rejection(small.batch([check(thread), check(thread), check(thread)]));
        assert.equal(three.code, Status.INVALID_ARGUMENT);
        assert.match(three.details, /^operations: must hold 1\.\.2 operations/);
        assert.equal((await small.batch([check(thread), check(thread)])).length, 2);
      } finally {
        small.close();
      }

      // Exactly the bound goes through, one result each.
      const full = await client.batch(over.slice(0, 256));
      assert.equal(full.length, 256);
      assert.ok(full.every((result) => result.replayed === false && result.cost_known));
      assert.equal(await threadInput(thread), 256 * USAGE.input_tokens);
    });

    it("a client bound past the daemon's: the daemon refuses the batch whole", async () => {
      const thread = randomUUID().slice(0, 8);
      const large = connect(target, { maxBatchOperations: 300 });
      try {
        const over = Array.from({ length: 257 }, () => consume(thread));
        const refused = await rejection(large.batch(over));
        assert.ok(!(refused instanceof StatusError), "the grpc-js error of the call");
        assert.equal(refused.code, Status.INVALID_ARGUMENT);
        assert.match(
          refused.details,
          /^operations: must hold 1\.\.256 operations \(server\.max_batch_operations\); got 257/,
        );
      } finally {
        large.close();
      }
      assert.equal(await threadInput(thread), 0);
    });

    it("an entry that is not one operation is refused whole, naming it", async () => {
      const thread = randomUUID().slice(0, 8);
      const both = { ...check(thread), ...consume(thread) };
      const twice = await rejection(client.batch([consume(thread), both]));
      assert.equal(twice.code, Status.INVALID_ARGUMENT);
      assert.match(twice.details, /^operations\[1\]: one operation each; check and consume/);
      const odd = await rejection(client.batch([consume(thread), null]));
      assert.match(odd.details, /^operations\[1\]: must be an object/);
      await assert.rejects(client.batch("consume"), TypeError);
      assert.equal(await threadInput(thread), 0);
    });
  });

  describe("batchStream()", () => {
    it("answers several batches in order, at most maxInFlight of them sent ahead", async () => {
      const thread = randomUUID().slice(0, 8);
      const stream = client.batchStream({ maxInFlight: 2 });
      const sends = Array.from({ length: 6 }, () => stream.send([consume(thread), check(thread)]));
      assert.equal(stream.inFlight, 2, "two sent");
      assert.equal(stream.waiting, 4, "the others wait their turn");
      const answers = await Promise.all(sends);
      answers.forEach(([consumed, seen], k) => {
        assert.equal(consumed.replayed, false);
        // Applied in order: batch k's check sees the k + 1 consumes up to its own.
        assert.equal(threadOf(seen).totals.input_tokens, (k + 1) * USAGE.input_tokens);
      });
      assert.equal(stream.inFlight, 0);
      await stream.close();
      const late = await rejection(stream.send([check(thread)]));
      assert.match(late.message, /send\(\) after close\(\)/);
      assert.equal(await threadInput(thread), 6 * USAGE.input_tokens);
    });

    it("a batch refused whole fails alone; the stream goes on", async () => {
      const thread = randomUUID().slice(0, 8);
      const large = connect(target, { maxBatchOperations: 300 });
      try {
        const stream = large.batchStream();
        const over = Array.from({ length: 257 }, () => consume(thread));
        const empty = stream.send([]); // refused by the client, never sent
        const first = stream.send([consume(thread)]);
        const refused = stream.send(over); // refused by the daemon's `error` answer
        const last = stream.send([consume(thread), check(thread)]);
        const local = await rejection(empty);
        assert.equal(local.code, Status.INVALID_ARGUMENT);
        assert.match(local.details, /got 0$/);
        assert.equal((await first).length, 1);
        const whole = await rejection(refused);
        assert.ok(whole instanceof StatusError);
        assert.equal(whole.code, Status.INVALID_ARGUMENT);
        assert.match(whole.details, /^operations: must hold 1\.\.256 operations/);
        const [, seen] = await last;
        assert.equal(threadOf(seen).totals.input_tokens, 2 * USAGE.input_tokens);
        await stream.close();
      } finally {
        large.close();
      }
      assert.equal(await threadInput(thread), 2 * USAGE.input_tokens, "nothing of the refused one");
    });

    it("a broken stream fails every pending send, saying whether it was sent", async () => {
      const thread = randomUUID().slice(0, 8);
      const stream = client.batchStream({ maxInFlight: 2 });
      assert.equal((await stream.send([consume(thread)])).length, 1);
      // Over the daemon's 64 KiB message limit: the transport ends the stream.
      const note = "x".repeat(70_000);
      const huge = consume(thread);
      huge.consume.labels = { ...labels(thread), note };
      const big = stream.send([huge]);
      const behind = stream.send([consume(thread)]);
      const unsent = stream.send([consume(thread)]);
      assert.deepEqual([stream.inFlight, stream.waiting], [2, 1]);
      for (const [pending, sent] of [[big, true], [behind, true], [unsent, false]]) {
        const error = await rejection(pending);
        assert.ok(error instanceof StatusError);
        assert.equal(error.code, Status.RESOURCE_EXHAUSTED, error.message);
        assert.equal(error.sent, sent);
        const said = sent ? /before the batch was answered/ : /before the batch was sent/;
        assert.match(error.details, said);
        assert.equal(error.cause.code, Status.RESOURCE_EXHAUSTED);
      }
      const after = await rejection(stream.send([consume(thread)]));
      assert.equal(after.code, Status.RESOURCE_EXHAUSTED);
      assert.equal(after.sent, false);
      await stream.closed;
      assert.equal(await threadInput(thread), USAGE.input_tokens, "only the first batch");
    });

    it("the client's close() cancels its open streams: pending sends fail CANCELLED", async () => {
      const thread = randomUUID().slice(0, 8);
      const own = connect(target);
      const stream = own.batchStream();
      const pending = stream.send([check(thread)]);
      own.close();
      const error = await rejection(pending);
      assert.equal(error.code, Status.CANCELLED);
      assert.equal(error.sent, true);
      await stream.closed;
    });
  });
});
