'use strict';
// A small jobpulse client for Node: the contract loaded at run time from protos/ (no generated code),
// over @grpc/grpc-js. It exists to prove the contract from outside Python; contract_check.js drives it
// and tests/clients/test_node.py checks what it prints.

const fs = require('node:fs');
const os = require('node:os');
const path = require('node:path');
const grpc = require('@grpc/grpc-js');
const protoLoader = require('@grpc/proto-loader');
const protobuf = require('protobufjs');

const PROTOS = path.resolve(__dirname, '..', '..', 'protos');

// keepCase: the field names of the .proto files (job_id, not jobId), as every other client sees them.
// longs and enums as strings: the contract's JSON mapping writes int64 and enums that way too, so
// nothing is rounded and the JSON this client prints reads like the webhook bodies.
const LOAD_OPTIONS = { keepCase: true, longs: String, enums: String, defaults: true, oneofs: true };

const TERMINAL = new Set(['JOB_STATE_COMPLETED', 'JOB_STATE_FAILED', 'JOB_STATE_CANCELLED']);

/**
 * The jobpulse.v1 package of job_service.proto (the JobService constructor and its messages). The
 * protos import google/api/annotations.proto (the JSON face's HTTP rules), found under googleapisDir
 * (see loadStatusTypes), as any client of protos written in Google's style finds it.
 */
function loadContract(googleapisDir) {
  const definition = protoLoader.loadSync('jobpulse/v1/job_service.proto', {
    ...LOAD_OPTIONS,
    includeDirs: [PROTOS, ...longrunningAlias(googleapisDir), googleapisDir],
  });
  return grpc.loadPackageDefinition(definition).jobpulse.v1;
}

/**
 * The contract imports google/longrunning/operations.proto (CancelJobs and its kin return a
 * google.longrunning.Operation), the name googleapis gives that file; the googleapis-common-protos
 * Python package ships it as operations_proto.proto. For such a directory: a temporary one holding the
 * file under the imported name (removed at exit); else none.
 */
function longrunningAlias(googleapisDir) {
  const shipped = path.join(googleapisDir, 'google', 'longrunning', 'operations_proto.proto');
  if (fs.existsSync(path.join(googleapisDir, 'google', 'longrunning', 'operations.proto')) || !fs.existsSync(shipped)) {
    return [];
  }
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'jobpulse-protos-'));
  fs.mkdirSync(path.join(dir, 'google', 'longrunning'), { recursive: true });
  fs.copyFileSync(shipped, path.join(dir, 'google', 'longrunning', 'operations.proto'));
  process.on('exit', () => fs.rmSync(dir, { recursive: true, force: true }));
  return [dir];
}

/**
 * google.rpc.Status and the error detail messages, from the .proto files under googleapisDir (a
 * directory holding google/rpc/status.proto and google/rpc/error_details.proto, such as the one the
 * googleapis-common-protos Python package installs). google/protobuf imports come with protobufjs.
 */
function loadStatusTypes(googleapisDir) {
  const root = new protobuf.Root();
  root.resolvePath = (_origin, target) => (path.isAbsolute(target) ? target : path.join(googleapisDir, target));
  root.loadSync(['google/rpc/status.proto', 'google/rpc/error_details.proto'], { keepCase: true });
  return root;
}

/**
 * A client of JobService at target ("host:port"); apiKey, if given, goes as a bearer token;
 * googleapisDir as for loadContract.
 */
function jobService(target, apiKey, googleapisDir) {
  const v1 = loadContract(googleapisDir);
  const client = new v1.JobService(target, grpc.credentials.createInsecure());
  const metadata = new grpc.Metadata();
  if (apiKey) metadata.set('authorization', `Bearer ${apiKey}`);
  return { client, metadata };
}

/** Calls a unary method and resolves with its response (rejects with the grpc error). */
function unary(service, method, request) {
  return new Promise((resolve, reject) => {
    service.client[method](request, service.metadata, { deadline: Date.now() + 30_000 }, (err, response) =>
      err ? reject(err) : resolve(response),
    );
  });
}

/**
 * Watches a job from a snapshot until the server ends the stream (it does once the job is terminal).
 * onMessage gets each WatchJobResponse; resolves with the last one.
 */
function watchJob(service, jobId, onMessage) {
  return new Promise((resolve, reject) => {
    let last = null;
    const call = service.client.WatchJob({ job_id: jobId, after_revision: 0 }, service.metadata);
    call.on('data', (message) => {
      last = message;
      onMessage(message);
    });
    call.on('error', reject);
    call.on('end', () => {
      if (last && last.job && TERMINAL.has(last.job.state)) resolve(last);
      else reject(new Error('the WatchJob stream ended before the job was terminal'));
    });
  });
}

/**
 * What a failed call says, with its google.rpc.Status details (the grpc-status-details-bin trailer)
 * decoded: each detail as its message's fields plus "@type".
 */
function describeError(err, statusTypes) {
  const out = { code: grpc.status[err.code] ?? String(err.code), message: err.details, details: [] };
  const raw = err.metadata ? err.metadata.get('grpc-status-details-bin') : [];
  if (raw.length === 0) return out;
  const Status = statusTypes.lookupType('google.rpc.Status');
  const status = Status.decode(raw[0]);
  out.status_code = status.code;
  out.status_message = status.message;
  for (const any of status.details) {
    const name = any.type_url.slice(any.type_url.lastIndexOf('/') + 1);
    let fields;
    try {
      const type = statusTypes.lookupType(name);
      fields = type.toObject(type.decode(any.value), { longs: String, enums: String });
    } catch {
      // A detail type this client does not know: say so rather than fail the whole error.
      fields = { undecoded: Buffer.from(any.value).toString('base64') };
    }
    out.details.push({ '@type': any.type_url, ...fields });
  }
  return out;
}

module.exports = { TERMINAL, loadContract, loadStatusTypes, jobService, unary, watchJob, describeError };
