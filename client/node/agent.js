// agent.js — an example agent that asks budgetd before each model call.
//
//   node agent.js                 # talks to $BUDGETD_TARGET or the default socket
//   node agent.js unix:/path/budgetd.sock
//
// One task (a "run"): OpenRun -> Reserve an estimate -> call the model (pretend) ->
// Commit the actual usage -> Consume a second call reported after the fact ->
// read the thread's ledgers -> CloseRun, one printed line per step.
//
// Every mutating call carries a request_id made once with crypto.randomUUID(). The
// channel retries a call that failed with UNAVAILABLE (the contract's service config,
// see budgetd.js) with that same request: the daemon answers a repeat with the stored
// answer (`replayed: true`) and counts nothing twice.

import { randomUUID } from "node:crypto";
import { pathToFileURL } from "node:url";

import { connect, defaultTarget, duration, statusName, toMillis } from "./budgetd.js";

const MODEL = "gpt-4o-mini";
const PROVIDER = "openai";

/** What the agent expects its model call to use (an estimate to Reserve). */
export const DEFAULT_ESTIMATE = Object.freeze({
  input_tokens: 1200,
  output_tokens: 400,
  model: MODEL,
  provider: PROVIDER,
});

/** A stand-in for the real model call: what it "used", derived from the estimate. */
export function pretendModelCall(estimate) {
  return {
    input_tokens: Math.round(estimate.input_tokens * 0.95),
    output_tokens: Math.round(estimate.output_tokens * 0.8),
    cached_input_tokens: 0,
    model: estimate.model,
    provider: estimate.provider,
    latency_ms: 850,
  };
}

/** A second call the agent made without a reservation (e.g. a cheap summarizer),
 * reported after the fact with Consume. */
export const FOLLOW_UP_USAGE = Object.freeze({
  input_tokens: 600,
  output_tokens: 90,
  model: MODEL,
  provider: PROVIDER,
  latency_ms: 320,
});

const short = (state) => state.replace(/^LEDGER_STATE_/, "");
const briefs = (ledgers) => ledgers.map((l) => `${l.key}=${short(l.state)}`).join(" ");
const tokens = (usage) => usage.input_tokens + usage.output_tokens;

function describeBlocker(b) {
  return (
    `${b.policy} ${b.ledger} ${b.dimension}: used ${b.used} + reserved ${b.reserved}` +
    ` + requested ${b.requested} > limit ${b.limit} (short by ${b.shortfall})`
  );
}

/**
 * Run one task of the example agent against `target` and return a summary of what
 * happened. Options (for tests and experiments): `estimate` (the Usage to Reserve),
 * `followUp` (the Usage to Consume), `thread`, `log` (a console.log-like function),
 * `beforeClose` (an async hook called with the summary before CloseRun).
 */
export async function runAgent(target = defaultTarget(), options = {}) {
  const {
    estimate = DEFAULT_ESTIMATE,
    followUp = FOLLOW_UP_USAGE,
    thread = randomUUID().slice(0, 8),
    log = console.log,
    beforeClose = null,
  } = options;
  const labels = { agent: "node-example", thread };
  const runId = `node-example-${randomUUID()}`;
  const summary = {
    target,
    labels,
    runId,
    opened: false,
    granted: false,
    modelCalled: false,
    blockers: [],
    reservationId: "",
    committed: null, // Usage sent with Commit
    consumed: null, // the ConsumeRequest sent (kept so a caller can replay it)
    responses: {},
    threadLedgers: [],
    totals: null,
    closed: false,
  };
  const client = connect(target);
  try {
    // 1. OpenRun: one concurrency slot; the per-thread ledger lives until CloseRun.
    const openRequest = { request_id: randomUUID(), run_id: runId, labels, ttl: duration(60_000) };
    const opened = await client.budget.OpenRun(openRequest);
    summary.responses.openRun = opened;
    if (opened.decision === "DECISION_DENY") {
      summary.blockers = opened.blockers;
      log(`open-run  DENY ${opened.blockers.map(describeBlocker).join("; ")}`);
      return summary;
    }
    summary.opened = true;
    log(`open-run  ${opened.decision} run=${runId} ledgers: ${briefs(opened.ledgers)}`);

    try {
      // 2. Reserve the estimate in every matching ledger, or be denied.
      const reserveRequest = {
        request_id: randomUUID(),
        labels,
        estimate,
        ttl: duration(30_000),
        run_id: runId,
      };
      const reserved = await client.budget.Reserve(reserveRequest);
      summary.responses.reserve = reserved;
      if (reserved.decision === "DECISION_DENY") {
        // A denial is a normal answer: do not call the model.
        summary.blockers = reserved.blockers;
        log(`reserve   DENY ${reserved.blockers.map(describeBlocker).join("; ")}`);
        log("model     skipped: the budget said no");
      } else {
        summary.granted = true;
        summary.reservationId = reserved.reservation_id;
        log(
          `reserve   ${reserved.decision} reservation=${reserved.reservation_id}` +
            ` held=${tokens(estimate)} tokens cost=${reserved.reserved_cost_micro_usd} µUSD` +
            ` ledgers: ${briefs(reserved.ledgers)}`,
        );
        for (const w of reserved.warnings) log(`reserve   warning ${describeBlocker(w)}`);

        // 3. The model call itself (pretend).
        const actual = pretendModelCall(estimate);
        summary.modelCalled = true;
        log(`model     ${actual.model}: ${actual.input_tokens} in / ${actual.output_tokens} out`);

        // 4. Commit the actual usage in place of the hold.
        const commitRequest = {
          request_id: randomUUID(),
          reservation_id: reserved.reservation_id,
          actual,
        };
        const committed = await client.budget.Commit(commitRequest);
        summary.committed = actual;
        summary.responses.commit = committed;
        log(
          `commit    ${tokens(actual)} tokens cost=${committed.cost_micro_usd} µUSD` +
            ` ledgers: ${briefs(committed.ledgers)}`,
        );

        // 5. Consume: a call that already happened, reported after the fact.
        const consumeRequest = { request_id: randomUUID(), labels, usage: followUp, run_id: runId };
        const consumed = await client.budget.Consume(consumeRequest);
        summary.consumed = consumeRequest;
        summary.responses.consume = consumed;
        log(
          `consume   ${tokens(followUp)} tokens cost=${consumed.cost_micro_usd} µUSD` +
            ` ledgers: ${briefs(consumed.ledgers)}`,
        );
      }

      // 6. The thread's ledgers, found by label (keys are opaque: never build one).
      const listed = await client.budget.ListLedgers({ selector: { thread } });
      summary.threadLedgers = listed.ledgers;
      for (const ledger of listed.ledgers) {
        const caps = ledger.dimensions
          .map((d) => `${d.dimension} ${d.used}/${d.limit} (${d.percent} %)`)
          .join(", ");
        log(`ledger    ${ledger.key} ${short(ledger.state)} ${caps}`);
      }
      if (beforeClose) await beforeClose(summary);
    } finally {
      // 7. CloseRun, even if a step above failed: frees the slot at once.
      const closeRequest = { request_id: randomUUID(), run_id: runId };
      const closed = await client.budget.CloseRun(closeRequest);
      summary.closed = true;
      summary.totals = closed.totals;
      summary.responses.closeRun = closed;
      const t = closed.totals;
      log(
        `close-run ${t.requests} requests, ${t.total_tokens} tokens` +
          ` (${t.input_tokens} in / ${t.output_tokens} out), cost=${t.cost_micro_usd} µUSD,` +
          ` ${Math.round(toMillis(closed.duration))} ms;` +
          ` closed: ${closed.closed_ledgers.map((l) => l.key).join(" ") || "none"}`,
      );
    }
    return summary;
  } finally {
    client.close();
  }
}

if (process.argv[1] && import.meta.url === pathToFileURL(process.argv[1]).href) {
  runAgent(process.argv[2] || defaultTarget()).then(
    () => {},
    (error) => {
      const code = error.code === undefined ? "" : ` ${statusName(error.code)}`;
      console.error(`agent failed:${code} ${error.details ?? error.message}`);
      process.exitCode = 1;
    },
  );
}
