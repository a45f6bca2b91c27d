import type { NatsConnection, Subscription } from '@nats-io/transport-node'
import {
  type AlertPage,
  type AlertQuery,
  AnalyticsQueryError,
  type AnalyticsStore,
  type ObjectSchemaDoc,
  type ObjectStats,
  type RecordPage,
  type RecordQuery,
  type RuleOutcomeStore,
  type RuleStats,
  type SchemaConflict,
  type StoredDecision,
} from '../storage/index.ts'
import { type ErrorCode, SluiceError } from './errors.ts'
import type { Logger } from './logger.ts'
import { QUERY_QUEUE, SUBJECTS } from './streams.ts'

/** Requests the analytics store answers; the role owning the DuckDB file serves them over NATS. */
/** A batch job's records in the analytics store, and how many of them the rule stage decided on. */
export interface JobStoredCounts {
  stored: number
  evaluated: number
}

interface QueryRequests {
  [SUBJECTS.queryRecords]: { request: RecordQuery; response: RecordPage }
  [SUBJECTS.queryStats]: { request: { objects: string[] }; response: ObjectStats[] }
  [SUBJECTS.querySchemaConflicts]: { request: { schema: ObjectSchemaDoc }; response: SchemaConflict[] }
  [SUBJECTS.queryJobStored]: { request: { object: string; job_id: string }; response: JobStoredCounts }
  [SUBJECTS.queryRuleStats]: { request: { since_ms: number }; response: RuleStats }
  [SUBJECTS.queryAlerts]: { request: AlertQuery; response: AlertPage }
  [SUBJECTS.queryDecision]: { request: { record_id: string }; response: StoredDecision | null }
}
type QuerySubject = keyof QueryRequests
type QueryReply<S extends QuerySubject> = { ok: true; result: QueryRequests[S]['response'] } | { ok: false; code: ErrorCode; message: string; pointer?: string }

const encode = (v: unknown) => Buffer.from(JSON.stringify(v))

/** Serves analytics queries from `store` (and rule outcomes from `outcomes`) over NATS request/reply, in a queue group. */
export function serveQueries(nc: NatsConnection, store: AnalyticsStore, log: Logger, outcomes: RuleOutcomeStore): Subscription[] {
  const handlers: { [S in QuerySubject]: (req: QueryRequests[S]['request']) => Promise<QueryRequests[S]['response']> } = {
    [SUBJECTS.queryRecords]: (req) => store.queryRecords(req),
    [SUBJECTS.queryStats]: (req) => store.stats(req.objects),
    [SUBJECTS.querySchemaConflicts]: (req) => store.schemaConflicts(req.schema),
    [SUBJECTS.queryJobStored]: async (req) => ({
      stored: await store.jobStoredCount(req.object, req.job_id),
      evaluated: await outcomes.jobEvaluatedCount(req.job_id),
    }),
    [SUBJECTS.queryRuleStats]: (req) => outcomes.stats(req.since_ms),
    [SUBJECTS.queryAlerts]: (req) => outcomes.alerts(req),
    [SUBJECTS.queryDecision]: (req) => outcomes.decision(req.record_id),
  }
  return (Object.keys(handlers) as QuerySubject[]).map((subject) =>
    nc.subscribe(subject, {
      queue: QUERY_QUEUE,
      callback: (err, msg) => {
        if (err) return
        const handle = handlers[subject] as (req: unknown) => Promise<unknown>
        Promise.resolve()
          .then(() => handle(msg.json()))
          .then(
            (result) => msg.respond(encode({ ok: true, result })),
            (e: Error) => {
              if (e instanceof AnalyticsQueryError)
                return msg.respond(encode({ ok: false, code: 'SLUICE_BAD_REQUEST', message: e.message, pointer: e.pointer }))
              log.error({ err: e, subject }, 'analytics query failed')
              msg.respond(encode({ ok: false, code: 'SLUICE_INTERNAL', message: 'the analytics query failed; see the sink log' }))
            },
          )
      },
    }),
  )
}

/** Asks whichever process owns the analytics store. */
export class QueryClient {
  constructor(
    private readonly nc: NatsConnection,
    private readonly timeoutMs: number,
  ) {}

  async request<S extends QuerySubject>(subject: S, req: QueryRequests[S]['request']): Promise<QueryRequests[S]['response']> {
    let reply: QueryReply<S>
    try {
      const msg = await this.nc.request(subject, encode(req), { timeout: this.timeoutMs })
      reply = msg.json() as QueryReply<S>
    } catch (cause) {
      throw new SluiceError('SLUICE_QUERY_UNAVAILABLE', `the analytics sink did not answer: ${(cause as Error).message}`, {
        cause,
        headers: { 'Retry-After': '2' },
      })
    }
    if (!reply.ok) throw new SluiceError(reply.code, reply.message, reply.pointer ? { errors: [{ pointer: reply.pointer, message: reply.message }] } : {})
    return reply.result
  }
}
