/** The JSON the dashboard reads from the Sluice HTTP API (README "API", docs/dashboard.md): its side of the contract. */

export interface KeyInfo {
  id: string
  name: string
  scopes: string[]
  created_at: string
  revoked_at: string | null
  last_used_at: string | null
}

export interface Session {
  signed_in: boolean
  key?: KeyInfo
  expires_at?: string
}

export type FieldType = 'string' | 'integer' | 'number' | 'boolean' | 'timestamp' | 'json'
export const FIELD_TYPES: FieldType[] = ['string', 'integer', 'number', 'boolean', 'timestamp', 'json']

export interface FieldSpec {
  type: FieldType
  nullable?: boolean
  description?: string
  enum?: string[]
  pattern?: string
  maxLength?: number
  minimum?: number
  maximum?: number
}

export interface ObjectSchemaDoc {
  object: string
  description?: string
  id_field: string
  time_field?: string
  fields: Record<string, FieldSpec>
}

export type SchemaChange =
  | { op: 'add_field'; field: string; spec: FieldSpec }
  | { op: 'remove_field'; field: string; spec: FieldSpec }
  | { op: 'make_nullable'; field: string }
  | { op: 'make_required'; field: string }
  | { op: 'change_type'; field: string; from: FieldType; to: FieldType }
  | { op: 'change_constraints'; field: string; from: FieldSpec; to: FieldSpec }
  | { op: 'change_meta'; what: 'id_field' | 'time_field' | 'description'; from?: string; to?: string }

export interface SchemaVersion {
  object: string
  version: number
  schema: ObjectSchemaDoc
  created_at: string
  created_by: string
  reason: 'default' | 'manual' | 'auto'
  trigger_record_id?: string | null
  diff: SchemaChange[]
}

/** A stored record, `GET /records/:object`. */
export interface RecordView {
  record_id: string
  seq?: number
  received_at: string
  stored_at?: string
  source: string
  schema_version: number
  job_id: string | null
  data: Record<string, unknown>
}

export interface RecordPage {
  object: string
  records: RecordView[]
  next_cursor?: string
}

export interface ObjectStats {
  object: string
  total: number
  rate_per_second: number
  last_received_at: string | null
  freshness_ms: number | null
}

/** One second of the live feed (`GET /events`, event `tick`). */
export interface LiveTick {
  at: number
  records: Record<string, number>
  alerts: number
  not_forwarded: Record<string, number>
}

/** A record the live feed forwarded: as JetStream has it, before the sink stored it. */
export interface LiveRecord extends Omit<RecordView, 'seq' | 'stored_at'> {
  object: string
}

export type DecisionName = 'approve' | 'review' | 'block'

/** A rule hit: a live alert (`alerts.<object>.<rule_id>`) or a stored one (`GET /alerts`). */
export interface Alert {
  record_id: string
  object: string
  account_id: string | null
  rule_id: string
  rule_name?: string
  rule_version: number
  score: number
  severity: string
  tags: string[]
  decision: DecisionName
  features: Record<string, number>
  record_time: string
  evaluated_at: string
}

/** What `POST /rules/test` answers: the decision the rule stage would make on one record. */
export interface TestDecision {
  decision: DecisionName
  score: number
  tags: string[]
  fired: { rule_id: string; score: number; features: Record<string, number> }[]
  shadow_hits: { rule_id: string; features: Record<string, number> }[]
  errors: { rule_id: string; message: string }[]
  stopped_by: string | null
  evaluations: { rule_id: string; rule_version: number; outcome: 'hit' | 'shadow_hit' | 'miss' | 'error' }[]
}

export interface RuleDefinition {
  id: string
  name: string
  description?: string
  object: string
  order: number
  when: string
  score: number
  severity: 'low' | 'medium' | 'high' | 'critical'
  tags: string[]
  stop: boolean
  mode: 'live' | 'shadow'
  enabled: boolean
  features: Record<string, unknown>
}

export interface StoredRule extends RuleDefinition {
  version: number
  updated_at: string
  updated_by: string
}

export interface RuleSet {
  version: number
  created_at: string | null
  created_by: string | null
  thresholds: Record<string, { review: number; block: number }>
  rules: StoredRule[]
}

export interface RuleCounters {
  rule_id: string
  evaluations: number
  hits: number
  shadow_hits: number
  errors: number
  mean_micros: number | null
  max_micros: number | null
}

export interface RuleStats {
  since: string
  decisions: Record<DecisionName, number>
  rules: RuleCounters[]
}

export type JobState = 'queued' | 'validating' | 'processing' | 'completed' | 'completed_with_errors' | 'failed' | 'cancelled'

export interface JobStatus {
  job_id: string
  object: string | null
  state: JobState
  source: string
  file_name: string | null
  format: string
  payload_bytes: number
  counts: { total: number | null; processed: number; accepted: number; rejected: number; stored: number; evaluated: number }
  progress: { percent: number; stored_percent: number }
  timestamps: Record<string, string | null>
  timings_ms: Record<string, number | null>
  error: string | null
  first_errors: { row: number; record_key: string | null; pointer: string; message: string }[]
  errors_url: string
}

export interface PipelineState {
  streams: { name: string; subjects: string[]; present: boolean; messages: number; bytes: number; first_seq: number; last_seq: number }[]
  consumers: {
    stream: string
    name: string
    role: string
    pending: number
    ack_pending: number
    redelivered: number
    waiting: number
    last_active: string | null
  }[]
}

export interface Readiness {
  ready: boolean
  checks: Record<string, { ok: boolean; detail?: string | number }>
}
