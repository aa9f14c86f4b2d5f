#!/usr/bin/env node
'use strict';
// Exercises the jobpulse contract from Node and prints what it saw as JSON lines on stdout, one object
// per line with an "event" field, for tests/clients/test_node.py to check.
//
//   node clients/node/contract_check.js lifecycle --target HOST:PORT --googleapis DIR [--kind K] [--items N]
//     CreateJob (N items, one per chunk) -> {"event":"created"}; WatchJob from a snapshot ->
//     {"event":"watching"} once the snapshot arrived, then {"event":"watch"} per message until the
//     server ends the stream at the terminal state (someone else completes the chunks meanwhile);
//     then GetJob (FULL) -> {"event":"result"} with the job and every revision the stream brought.
//
//   node clients/node/contract_check.js missing --target HOST:PORT --googleapis DIR [--job-id ID]
//     GetJob of a job that does not exist -> {"event":"error"} with the status code and the
//     google.rpc.Status details decoded from grpc-status-details-bin (ErrorInfo reason JOB_NOT_FOUND).
//
// --googleapis DIR: where google/api/annotations.proto (which the contract imports) and
// google/rpc/status.proto are, e.g. the googleapis-common-protos Python package's directory.
// JOBPULSE_API_KEY, if set, is sent as a bearer token. Exit code 0 when the calls went as described,
// 1 otherwise (with {"event":"failed"} saying why).

const { parseArgs } = require('node:util');
const jobpulse = require('./jobpulse');

function emit(event, fields) {
  process.stdout.write(`${JSON.stringify({ event, ...fields })}\n`);
}

function summary(job) {
  const s = job.chunks_summary;
  return { total: s.total, pending: s.pending, processing: s.processing, completed: s.completed, failed: s.failed, cancelled: s.cancelled };
}

async function lifecycle(service, options) {
  const items = Number(options.items ?? '3');
  const created = await jobpulse.unary(service, 'CreateJob', {
    display_name: 'node contract check',
    kind: options.kind ?? 'node-contract',
    total_items: String(items),
    chunk_size: '1',
    labels: { client: 'node' },
  });
  const jobId = created.job.id;
  emit('created', { job_id: jobId, state: created.job.state, revision: created.job.revision });

  const seen = [];
  let announced = false;
  await jobpulse.watchJob(service, jobId, (message) => {
    seen.push({ type: message.type, revision: message.revision, more: message.more });
    const fields = { type: message.type, revision: message.revision, more: message.more, chunks: message.chunks.length };
    if (message.job) Object.assign(fields, { state: message.job.state, chunks_summary: summary(message.job) });
    if (!announced) {
      // The snapshot is here: the stream is open, so every change from now on reaches this watcher.
      announced = true;
      emit('watching', { job_id: jobId, revision: message.revision });
    }
    emit('watch', fields);
  });

  const { job } = await jobpulse.unary(service, 'GetJob', { job_id: jobId, view: 'JOB_VIEW_FULL' });
  emit('result', {
    job_id: job.id,
    state: job.state,
    revision: job.revision,
    chunks_summary: summary(job),
    chunks: job.chunks.map((c) => ({ index: c.index, state: c.state })),
    artifacts: job.artifacts.map((a) => ({ name: a.name, uri: a.uri, media_type: a.media_type, chunk_index: a.chunk_index })),
    labels: job.labels,
    watched: seen,
  });
}

async function missing(service, options) {
  if (!options.googleapis) throw new Error('missing needs --googleapis DIR (where google/rpc/status.proto is)');
  const statusTypes = jobpulse.loadStatusTypes(options.googleapis);
  const jobId = options['job-id'] ?? 'no-such-job';
  try {
    const { job } = await jobpulse.unary(service, 'GetJob', { job_id: jobId });
    throw new Error(`GetJob of ${jobId} answered with a job (${job.id})`);
  } catch (err) {
    if (err.code === undefined) throw err;
    emit('error', { job_id: jobId, ...jobpulse.describeError(err, statusTypes) });
  }
}

async function main() {
  const { positionals, values } = parseArgs({
    allowPositionals: true,
    options: {
      target: { type: 'string' },
      kind: { type: 'string' },
      items: { type: 'string' },
      googleapis: { type: 'string' },
      'job-id': { type: 'string' },
    },
  });
  const [command] = positionals;
  if (!values.target || !['lifecycle', 'missing'].includes(command)) {
    throw new Error('usage: contract_check.js lifecycle|missing --target HOST:PORT [options]');
  }
  if (!values.googleapis) throw new Error('--googleapis DIR is needed (where google/api/annotations.proto is)');
  const service = jobpulse.jobService(values.target, process.env.JOBPULSE_API_KEY, values.googleapis);
  try {
    await (command === 'lifecycle' ? lifecycle(service, values) : missing(service, values));
  } finally {
    service.client.close();
  }
}

main().catch((err) => {
  emit('failed', { message: String(err && err.stack ? err.stack : err), code: err && err.code });
  process.exitCode = 1;
});
