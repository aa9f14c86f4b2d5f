// The seeds' calls from TypeScript, through the JSON face: openapi-fetch with the types openapi-typescript
// makes from protos/openapi.json (./jobpulse.d.ts, generated beside this file, never committed: see
// README.md). It prints what it saw as JSON lines on stdout, one object a line with an "event" field, for
// tests/clients/test_openapi_typescript.py to check:
//
//   node seed_calls.js BASE_URL [KIND]
//     CreateJob (6 items, chunks of 2)            -> {"event":"created"}
//     ListJobs of KIND in PENDING                  -> {"event":"listed"}
//     GetJob in FULL view, with its chunks         -> {"event":"got"}
//     CancelJob                                    -> {"event":"cancelled"}
//     GetJobStats of KIND                          -> {"event":"stats"}
//     DeleteJob, then GetJob: the JSON error       -> {"event":"deleted"}, {"event":"gone"}
//
// JOBPULSE_API_KEY, if set, is sent as a bearer token. Exit code 0 when every call went as described,
// 1 otherwise (with {"event":"failed"} saying why).

import createClient, { type Client } from "openapi-fetch";
import type { components, paths } from "./jobpulse.js";

// The two things of Node this uses (no @types/node needed; console and fetch come with the DOM lib).
declare const process: { argv: string[]; env: Record<string, string | undefined>; exitCode?: number };

type Schemas = components["schemas"];
type Job = Schemas["jobpulse.v1.Job"];
type CreateJobRequest = Schemas["jobpulse.v1.CreateJobRequest"];
type ApiError = Schemas["Error"];

function emit(event: string, fields: Record<string, unknown>): void {
  console.log(JSON.stringify({ event, ...fields }));
}

/** The data of a call that answered 2xx; otherwise an Error naming the call and the JSON error. */
function ok<T>(what: string, result: { data?: T; error?: ApiError; response: Response }): T {
  if (result.data === undefined) {
    const said = result.error?.error;
    throw new Error(`${what}: HTTP ${result.response.status} ${said?.reason ?? ""} ${said?.message ?? ""}`);
  }
  return result.data;
}

/** A field proto3 may leave out (every message field is optional in the JSON mapping). */
function present<T>(what: string, value: T | undefined): T {
  if (value === undefined) {
    throw new Error(`${what} is missing`);
  }
  return value;
}

function chunkStates(job: Job): string[] {
  return (job.chunks ?? []).map((chunk) => chunk.state ?? "CHUNK_STATE_UNSPECIFIED");
}

async function seedCalls(client: Client<paths>, kind: string): Promise<void> {
  const request: CreateJobRequest = {
    kind,
    totalItems: "6", // int64: a string in the JSON mapping (the types say so)
    chunkSize: "2",
    displayName: "made by openapi-fetch",
    labels: { client: "typescript" },
  };
  const made = ok("CreateJob", await client.POST("/v1/jobs", { body: request }));
  const job = present("CreateJobResponse.job", made.job);
  const id = present("Job.id", job.id);
  emit("created", { id, state: job.state, totalItems: job.totalItems, summary: job.chunksSummary });

  const listed = ok(
    "ListJobs",
    await client.GET("/v1/jobs", { params: { query: { states: ["JOB_STATE_PENDING"], kind } } }),
  );
  emit("listed", { ids: (listed.jobs ?? []).map((j) => j.id), states: (listed.jobs ?? []).map((j) => j.state) });

  const got = ok(
    "GetJob",
    await client.GET("/v1/jobs/{job_id}", {
      params: { path: { job_id: id }, query: { view: "JOB_VIEW_FULL" } },
    }),
  );
  const full = present("GetJobResponse.job", got.job);
  emit("got", {
    id: full.id,
    chunks: (full.chunks ?? []).map((c) => ({ index: c.index ?? "0", itemCount: c.itemCount, jobId: c.jobId })),
    chunkStates: chunkStates(full),
  });

  const cancelled = ok(
    "CancelJob",
    await client.POST("/v1/jobs/{job_id}:cancel", {
      params: { path: { job_id: id } },
      body: { reason: "the TypeScript seed is done with it" },
    }),
  );
  const after = present("CancelJobResponse.job", cancelled.job);
  emit("cancelled", { state: after.state, reason: after.cancelReason });

  const stats = ok("GetJobStats", await client.GET("/v1/jobs:stats", { params: { query: { kind } } }));
  const counts = Object.fromEntries((stats.stats?.stateCounts ?? []).map((c) => [c.state, c.count ?? "0"]));
  emit("stats", { totalJobs: stats.stats?.totalJobs ?? "0", counts });

  ok("DeleteJob", await client.DELETE("/v1/jobs/{job_id}", { params: { path: { job_id: id } } }));
  emit("deleted", { id });

  const gone = await client.GET("/v1/jobs/{job_id}", { params: { path: { job_id: id } } });
  emit("gone", {
    status: gone.response.status,
    code: gone.error?.error.code,
    reason: gone.error?.error.reason,
    details: (gone.error?.error.details ?? []).map((d) => d["@type"]),
  });
}

/** Never called: what the compiler must refuse (tsc fails on an @ts-expect-error with no error after it). */
export function wrongCalls(client: Client<paths>): void {
  // @ts-expect-error totalItems is an int64, a string in the JSON mapping, not a number.
  void client.POST("/v1/jobs", { body: { kind: "k", totalItems: 6 } });
  // @ts-expect-error an unknown field: a request's schema allows no other properties. (Checked on the type:
  // openapi-fetch infers the body from the argument, so a literal passed straight to POST is not checked
  // for excess properties.)
  const extra: CreateJobRequest = { kind: "k", totalItems: "6", colour: "red" };
  void extra;
  // @ts-expect-error no such path.
  void client.GET("/v1/jobz");
  // @ts-expect-error no such state.
  void client.GET("/v1/jobs", { params: { query: { states: ["JOB_STATE_SLEEPING"] } } });
  // @ts-expect-error the path's job_id is required.
  void client.GET("/v1/jobs/{job_id}", {});
}

async function main(argv: string[]): Promise<number> {
  const [baseUrl, kind = "ts-seed"] = argv;
  if (baseUrl === undefined) {
    emit("failed", { message: "usage: node seed_calls.js BASE_URL [KIND]" });
    return 1;
  }
  const key = process.env["JOBPULSE_API_KEY"];
  const client = createClient<paths>({
    baseUrl,
    headers: key ? { Authorization: `Bearer ${key}` } : {},
  });
  try {
    await seedCalls(client, kind);
  } catch (err) {
    emit("failed", { message: err instanceof Error ? err.message : String(err) });
    return 1;
  }
  return 0;
}

process.exitCode = await main(process.argv.slice(2));
