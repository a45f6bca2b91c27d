import { isUtf8 } from 'node:buffer'
import { closeSync, ftruncateSync, mkdirSync, openSync, rmSync, writeSync } from 'node:fs'
import { basename, dirname, join } from 'node:path'
import { type DuckDBConnection, DuckDBInstance, type DuckDBPreparedStatement, DuckDBTimestampValue } from '@duckdb/node-api'
import { duckdbType, type FieldType, type ObjectSchemaDoc } from './object-schema.ts'

/**
 * A record message holds one envelope (real-time ingest) or, from batch jobs, a JSON array of up to this many
 * envelopes of one object and partition: JetStream, the sink and the rule stage then pay per message, not per
 * record (docs/performance.md).
 */
export const RECORDS_PER_MESSAGE = 1024

/**
 * A record's sequence, unique and in stream order: its message's stream sequence times RECORDS_PER_MESSAGE plus
 * its place in the message. Stored rows (`seq`), decisions and alerts (`record_seq`) carry it;
 * `Math.floor(seq / RECORDS_PER_MESSAGE)` is the JetStream sequence.
 */
export function recordSeq(streamSeq: number, position = 0): number {
  return streamSeq * RECORDS_PER_MESSAGE + position
}

/** One record message as the sink hands it to the store: where it starts, and its envelopes as the JSON they came in. */
export interface EnvelopeRow {
  /** The record sequence of its first envelope: what makes a redelivered message recognisable. */
  seq: number
  /** A JSON array of envelopes (pipeline/envelope.ts), UTF-8: DuckDB reads it, so the sink never converts a field. */
  envelopes: Uint8Array
}

/** Filters are field = value equality, all of them must hold. */
export interface RecordQuery {
  object: string
  limit: number
  /** Only records older (lower sequence) than this cursor. */
  before?: number
  /** `current`: the latest version of each record id (default); `history`: every version stored. */
  view?: 'current' | 'history'
  filters?: Record<string, string>
}

export interface RecordView {
  record_id: string
  seq: number
  received_at: string
  stored_at: string
  source: string
  schema_version: number
  job_id: string | null
  data: Record<string, unknown>
}

export interface RecordPage {
  object: string
  records: RecordView[]
  /** Pass as `cursor` for the next page; absent on the last page. */
  next_cursor?: string
}

export interface ObjectStats {
  object: string
  total: number
  /** Records received in the last minute, per second. */
  rate_per_second: number
  last_received_at: string | null
  /** Mean time from receipt to being queryable of the records sent one at a time in the last minute, ms (null: none). */
  freshness_ms: number | null
}

interface Column {
  name: string
  type: FieldType
}

const META_COLUMNS = [
  '_seq BIGINT NOT NULL',
  '_record_id VARCHAR NOT NULL',
  '_received_at TIMESTAMP NOT NULL',
  '_stored_at TIMESTAMP NOT NULL',
  '_source VARCHAR NOT NULL',
  '_schema_version INTEGER NOT NULL',
  '_job_id VARCHAR',
]
const META_COUNT = META_COLUMNS.length

/** A stored field whose values a proposed schema could not hold. */
export interface SchemaConflict {
  field: string
  /** How many stored values do not cast to the new type. */
  count: number
  message: string
}

/** Raised for a query the store cannot answer as asked (unknown filter field, say): the caller's mistake. */
export class AnalyticsQueryError extends Error {
  constructor(
    message: string,
    readonly pointer: string,
  ) {
    super(message)
  }
}

/** The newest rows a page of the current view is first looked for among, then eight times as many, then as many again. */
const NEWEST_CANDIDATES = 1024
const MAX_NEWEST_CANDIDATES = NEWEST_CANDIDATES * 64

/** How the current view ranks an object's versions: `over` numbers each id's versions (`id`), newest first. */
interface VersionRank {
  id: string
  over: string
}

const CLOSE_LINE = Buffer.from('}\n')
const CLOSE_OBJECT = Buffer.from('}')
const CLOSE_ARRAY = Buffer.from(']')

const whereOf = (conditions: string[]) => (conditions.length > 0 ? ` WHERE ${conditions.join(' AND ')}` : '')

export const tableName = (object: string) => `records_${object}`
/** The latest version of each record id: by the schema's time field, then by arrival (stream sequence). */
export const currentViewName = (object: string) => `current_${object}`
const quote = (ident: string) => `"${ident}"`
const tsValue = (ms: number) => new DuckDBTimestampValue(BigInt(Math.round(ms)) * 1000n)

/** A page of an object's current view: its filters (`matches`, with `values`), cursor condition (`below`) and size. */
interface CurrentPageQuery {
  object: string
  rank: VersionRank
  matches: string[]
  values: (string | number)[]
  below: string[]
  limit: number
}

export interface AnalyticsStoreOptions {
  /** The write-ahead log's size that makes DuckDB checkpoint, MB; DuckDB's default when not given. */
  checkpointThresholdMb?: number
  /** What DuckDB may hold in memory, MB; DuckDB's default when not given. */
  memoryLimitMb?: number
  /** Called when DuckDB could not read a write from the append file and it was made from a parameter instead. */
  onParameterWrite?: (cause: Error) => void
}

/**
 * The columnar store: one append-only DuckDB table per object, typed columns from its schema plus metadata
 * columns. DuckDB allows one process per file, so only the analytics sink opens it; others query through it.
 */
export class AnalyticsStore {
  readonly #instance: DuckDBInstance
  readonly #write: DuckDBConnection
  readonly #read: DuckDBConnection
  readonly #columns = new Map<string, Column[]>()
  /** Each object's insert statements, made anew when its table changes. */
  readonly #inserts = new Map<string, InsertStatements>()
  /**
   * The file a write's records are handed to DuckDB through, open for the store's life: overwritten in place, it
   * cost a seventh of writing it anew (which truncated it first). One per store, so writes take turns.
   */
  readonly #appendFile: AppendFile
  #appending: Promise<unknown> = Promise.resolve()
  readonly #onParameterWrite?: (cause: Error) => void
  /** How each object's current view ranks versions. */
  readonly #versionRanks = new Map<string, VersionRank>()

  private constructor(
    instance: DuckDBInstance,
    write: DuckDBConnection,
    read: DuckDBConnection,
    appendFile: AppendFile,
    onParameterWrite?: (cause: Error) => void,
  ) {
    this.#instance = instance
    this.#write = write
    this.#read = read
    this.#appendFile = appendFile
    this.#onParameterWrite = onParameterWrite
  }

  /** Another connection to the same file, for other parts of the sink role (rule outcomes) that keep their own tables. */
  connect(): Promise<DuckDBConnection> {
    return this.#instance.connect()
  }

  static async open(path: string, opts: AnalyticsStoreOptions = {}): Promise<AnalyticsStore> {
    mkdirSync(dirname(path), { recursive: true })
    const instance = await DuckDBInstance.create(path, {
      ...(opts.checkpointThresholdMb && { checkpoint_threshold: `${opts.checkpointThresholdMb}MB` }),
      ...(opts.memoryLimitMb && { memory_limit: `${opts.memoryLimitMb}MB` }),
    })
    const write = await instance.connect()
    await renumberStreamSeqs(write)
    const appendPath = join(dirname(path), `${basename(path)}.append.ndjson`)
    return new AnalyticsStore(instance, write, await instance.connect(), { path: appendPath, fd: openSync(appendPath, 'w') }, opts.onParameterWrite)
  }

  /**
   * Creates the object's table, or brings it to the schema: added fields become columns (existing rows read
   * null there), a changed type alters the column (PUT /schema checked that stored values cast). Removed fields
   * keep their columns: history is never dropped. Also (re)creates the current view.
   */
  async ensureTable(schema: ObjectSchemaDoc): Promise<void> {
    const table = tableName(schema.object)
    const fieldCols = Object.entries(schema.fields).map(([name, spec]) => `${quote(name)} ${duckdbType(spec.type)}`)
    await this.#write.run(`CREATE TABLE IF NOT EXISTS ${table} (${[...META_COLUMNS, ...fieldCols].join(', ')})`)
    const existing = new Map((await this.#tableColumns(table)).map((c) => [c.name, c.type]))
    for (const [name, spec] of Object.entries(schema.fields)) {
      const wanted = duckdbType(spec.type)
      const has = existing.get(name)
      if (has === undefined) await this.#write.run(`ALTER TABLE ${table} ADD COLUMN ${quote(name)} ${wanted}`)
      // TRY_CAST: a value that slipped in between the conflict check and this change becomes null rather than stall the sink.
      else if (has !== wanted) await this.#write.run(`ALTER TABLE ${table} ALTER ${quote(name)} TYPE ${wanted} USING TRY_CAST(${quote(name)} AS ${wanted})`)
    }
    const order = schema.time_field ? `${quote(schema.time_field)} DESC NULLS LAST, _seq DESC` : '_seq DESC'
    const rank = { id: quote(schema.id_field), over: `row_number() OVER (PARTITION BY ${quote(schema.id_field)} ORDER BY ${order})` }
    this.#versionRanks.set(schema.object, rank)
    await this.#write.run(
      `CREATE OR REPLACE VIEW ${currentViewName(schema.object)} AS
       SELECT * EXCLUDE (_version_rank) FROM (SELECT *, ${rank.over} AS _version_rank FROM ${table}) WHERE _version_rank = 1`,
    )
    const types = new Map(Object.entries(schema.fields).map(([n, s]) => [n, s.type]))
    // Field columns in the table's physical order, which is the order an appender must write them in.
    // A removed field's column keeps being written (null), typed by what it holds.
    const columns = (await this.#tableColumns(table))
      .slice(META_COUNT)
      .map((c): Column => ({ name: c.name, type: types.get(c.name) ?? fieldTypeOfColumn(c.type) }))
    this.#columns.set(schema.object, columns)
    this.#inserts.delete(schema.object)
  }

  /** How many records of a batch job are stored (every version, so a job's own updates all count). */
  async jobStoredCount(object: string, jobId: string): Promise<number> {
    if (!this.#columns.has(object)) return 0
    const res = await this.#read.runAndReadAll(`SELECT count(*) AS n FROM ${tableName(object)} WHERE _job_id = ?`, [jobId])
    return Number(res.getRowObjectsJS()[0].n)
  }

  /** Which stored values the proposed schema's types could not hold (empty when there is no table yet). */
  async schemaConflicts(schema: ObjectSchemaDoc): Promise<SchemaConflict[]> {
    const table = tableName(schema.object)
    const existing = new Map((await this.#tableColumns(table)).map((c) => [c.name, c.type]))
    const conflicts: SchemaConflict[] = []
    for (const [field, spec] of Object.entries(schema.fields)) {
      const has = existing.get(field)
      const wanted = duckdbType(spec.type)
      if (has === undefined || has === wanted) continue
      const res = await this.#read.runAndReadAll(
        `SELECT count(*) AS n FROM ${table} WHERE ${quote(field)} IS NOT NULL AND TRY_CAST(${quote(field)} AS ${wanted}) IS NULL`,
      )
      const count = Number(res.getRowObjectsJS()[0].n)
      if (count > 0) conflicts.push({ field, count, message: `${field}: ${count} stored value(s) of type ${has} cannot be cast to ${spec.type}` })
    }
    return conflicts
  }

  hasTable(object: string): boolean {
    return this.#columns.has(object)
  }

  async #tableColumns(table: string): Promise<{ name: string; type: string }[]> {
    const res = await this.#write.runAndReadAll(
      'SELECT column_name AS name, data_type AS type FROM information_schema.columns WHERE table_name = ? ORDER BY ordinal_position',
      [table],
    )
    return res.getRowObjectsJS() as { name: string; type: string }[]
  }

  /**
   * Appends the records of messages not stored yet (nor earlier in the same batch), so a redelivered message
   * adds nothing twice. Returns how many rows were written. The table must exist (ensureTable).
   * DuckDB reads and converts the records itself (a fifth of the CPU of an appender, which also held the event
   * loop for every value): from a file of one line per message (read_ndjson, about a third less CPU a row than
   * the same JSON as a parameter); a value that does not convert to its column's type fails that read, and the
   * write is made again from a parameter, where it becomes null (docs/performance.md).
   */
  append(object: string, rows: EnvelopeRow[]): Promise<number> {
    const appended = this.#appending.then(() => this.#append(object, rows))
    this.#appending = appended.catch(() => {})
    return appended
  }

  async #append(object: string, rows: EnvelopeRow[]): Promise<number> {
    const columns = this.#columns.get(object)
    if (!columns) throw new Error(`no analytics table for ${object}`)
    if (rows.length === 0) return 0
    // A message redelivered while its first delivery is still in this batch appears twice: keep one. Messages
    // stored before are left out by the insert itself (insertStatement), so a write is one statement.
    const seqs = new Set<number>()
    const fresh = rows.filter((r) => !seqs.has(r.seq) && seqs.add(r.seq))
    let min = fresh[0].seq
    let max = min
    for (const r of fresh) {
      if (r.seq < min) min = r.seq
      if (r.seq > max) max = r.seq
    }
    let insert = this.#inserts.get(object)
    if (!insert) {
      insert = {
        fromFile: await this.#write.prepare(insertStatement(tableName(object), columns, { file: this.#appendFile.path })),
        fromParameter: await this.#write.prepare(insertStatement(tableName(object), columns, 'parameter')),
      }
      this.#inserts.set(object, insert)
    }
    const bindCommon = (statement: DuckDBPreparedStatement) => {
      statement.bindTimestamp(1, tsValue(Date.now()))
      statement.bindBigInt(2, BigInt(min))
      statement.bindBigInt(3, BigInt(max))
    }
    const lines = Buffer.concat(fresh.flatMap((r) => [Buffer.from(`{"seq":${r.seq},"envs":`), r.envelopes, CLOSE_LINE]))
    if (isUtf8(lines)) {
      writeSync(this.#appendFile.fd, lines, 0, lines.length, 0)
      ftruncateSync(this.#appendFile.fd, lines.length)
      bindCommon(insert.fromFile)
      const fromFile = await insert.fromFile.run().catch((err: Error) => {
        this.#onParameterWrite?.(err)
      })
      if (fromFile) return Number(fromFile.rowsChanged)
    }
    // The same messages as a JSON array. decode() fails the whole insert on bytes that are not UTF-8, which only
    // another publisher's message could hold: those are read as toString() reads them (a replacement character).
    const array = Buffer.concat(
      fresh.flatMap((r, i) => [Buffer.from(`${i === 0 ? '[' : ','}{"seq":${r.seq},"envs":`), r.envelopes, CLOSE_OBJECT]).concat(CLOSE_ARRAY),
    )
    bindCommon(insert.fromParameter)
    insert.fromParameter.bindBlob(4, isUtf8(array) ? array : Buffer.from(array.toString('utf8')))
    return Number((await insert.fromParameter.run()).rowsChanged)
  }

  async queryRecords(q: RecordQuery): Promise<RecordPage> {
    const columns = this.#columns.get(q.object)
    // ensureTable sets both together.
    const rank = this.#versionRanks.get(q.object)
    if (!columns || !rank) return { object: q.object, records: [] }
    const matches: string[] = []
    const values: (string | number)[] = []
    for (const [field, value] of Object.entries(q.filters ?? {})) {
      if (field === 'record_id') {
        matches.push('_record_id = ?')
        values.push(value)
        continue
      }
      const col = columns.find((c) => c.name === field)
      if (!col) throw new AnalyticsQueryError(`unknown field ${field} of ${q.object}`, `/query/${field}`)
      if (col.type === 'json') throw new AnalyticsQueryError(`field ${field} holds JSON and cannot be filtered on`, `/query/${field}`)
      matches.push(`${quote(field)} = TRY_CAST(? AS ${duckdbType(col.type)})`)
      values.push(value)
    }
    const below = q.before === undefined ? [] : [`_seq < ${Number(q.before)}`]
    const limit = q.limit + 1
    let rows: Record<string, unknown>[]
    if (q.view === 'history')
      rows = await this.#rows(`SELECT * FROM ${tableName(q.object)}${whereOf([...matches, ...below])} ORDER BY _seq DESC LIMIT ${limit}`, values)
    else {
      const current: CurrentPageQuery = { object: q.object, rank, matches, values, below, limit }
      rows = (await this.#newestCurrent(current)) ?? (await this.#anyCurrent(current))
    }
    const page = rows.slice(0, q.limit).map((row) => toView(row, columns))
    return {
      object: q.object,
      records: page,
      ...(rows.length > q.limit ? { next_cursor: String(page[page.length - 1].seq) } : {}),
    }
  }

  async #rows(sql: string, params: (string | number)[]): Promise<Record<string, unknown>[]> {
    return (await this.#read.runAndReadAll(sql, params)).getRowObjectsJS() as Record<string, unknown>[]
  }

  /**
   * A page of the current view, ranking only the versions of the ids `ids` picks (`IN (...)`) rather than every
   * version in the table, which grew with it (200 ms a page at 200,000 rows). `conditions` then hold for the
   * page's rows. The page's sequences come first, from the id, time and sequence columns; then its rows whole.
   */
  #currentPage(
    object: string,
    rank: VersionRank,
    ids: string,
    conditions: string[],
    limit: number,
    params: (string | number)[],
  ): Promise<Record<string, unknown>[]> {
    const table = tableName(object)
    return this.#rows(
      `WITH page AS (
         SELECT _seq FROM (
           SELECT *, ${rank.over} AS _version_rank FROM ${table} WHERE ${rank.id} ${ids}
         )${whereOf(['_version_rank = 1', ...conditions])} ORDER BY _seq DESC LIMIT ${limit}
       )
       SELECT * FROM ${table} WHERE _seq IN (SELECT _seq FROM page) ORDER BY _seq DESC`,
      params,
    )
  }

  /** A page of the current view from every id that matches, or from the whole view when unfiltered. */
  #anyCurrent({ object, rank, matches, values, below, limit }: CurrentPageQuery): Promise<Record<string, unknown>[]> {
    if (matches.length === 0) return this.#rows(`SELECT * FROM ${currentViewName(object)}${whereOf(below)} ORDER BY _seq DESC LIMIT ${limit}`, [])
    // The filters' values go in twice: to pick the ids, then to test their current versions.
    const ids = `IN (SELECT ${rank.id} FROM ${tableName(object)}${whereOf(matches)})`
    return this.#currentPage(object, rank, ids, [...matches, ...below], limit, [...values, ...values])
  }

  /**
   * The newest page of the current view, filtered by `matches` (with `values`) or not (the dashboard's Records page). Any current
   * version that matches and is newer than the `candidates`-th newest matching row (the floor) is itself one of
   * those rows, so ranking only the versions of their ids finds every such version above the floor; when there
   * are a page of them, they are the page. Otherwise more candidates are taken, then undefined: the caller ranks
   * every matching id (#anyCurrent). A filter most rows match made that ranking the slow case (285 ms a page at a million rows).
   */
  async #newestCurrent({ object, rank, matches, values, below, limit }: CurrentPageQuery): Promise<Record<string, unknown>[] | undefined> {
    const table = tableName(object)
    for (let candidates = NEWEST_CANDIDATES; candidates <= MAX_NEWEST_CANDIDATES; candidates *= 8) {
      const [top] = await this.#rows(
        `SELECT min(_seq) AS floor, count(*) AS n FROM (SELECT _seq FROM ${table}${whereOf([...matches, ...below])} ORDER BY _seq DESC LIMIT ${candidates})`,
        values,
      )
      // Fewer rows than candidates: few rows match (or the table is small), and ranking them all is cheap.
      if (Number(top.n) < candidates) return undefined
      const floor = `_seq >= ${Number(top.floor)}`
      const ids = `IN (SELECT ${rank.id} FROM ${table} WHERE ${[floor, ...matches].join(' AND ')})`
      const rows = await this.#currentPage(object, rank, ids, [floor, ...matches, ...below], limit, [...values, ...values])
      if (rows.length >= limit) return rows
    }
    return undefined
  }

  async stats(objects: string[], now = Date.now()): Promise<ObjectStats[]> {
    const out: ObjectStats[] = []
    const since = tsValue(now - 60_000)
    for (const object of objects) {
      if (!this.#columns.has(object)) {
        out.push({ object, total: 0, rate_per_second: 0, last_received_at: null, freshness_ms: null })
        continue
      }
      // A batch job's records carry the job's receipt: their freshness would be the job's length, not the pipeline's.
      const res = await this.#read.runAndReadAll(
        `SELECT count(*) AS total,
                count(*) FILTER (WHERE _received_at >= $since) AS last_minute,
                max(_received_at) AS last_received_at,
                avg(epoch_ms(_stored_at) - epoch_ms(_received_at)) FILTER (WHERE _received_at >= $since AND _job_id IS NULL) AS freshness_ms
         FROM ${tableName(object)}`,
        { since },
      )
      const row = res.getRowObjectsJS()[0]
      out.push({
        object,
        total: Number(row.total),
        rate_per_second: Number(row.last_minute) / 60,
        last_received_at: row.last_received_at ? (row.last_received_at as Date).toISOString() : null,
        freshness_ms: row.freshness_ms === null ? null : Math.round(Number(row.freshness_ms)),
      })
    }
    return out
  }

  close(): void {
    this.#write.closeSync()
    this.#read.closeSync()
    this.#instance.closeSync()
    closeSync(this.#appendFile.fd)
    rmSync(this.#appendFile.path, { force: true })
  }
}

/** The field type a column of this DuckDB type holds, for columns no longer in the schema. */
function fieldTypeOfColumn(duckType: string): FieldType {
  const byDuck: Record<string, FieldType> = { BIGINT: 'integer', DOUBLE: 'number', BOOLEAN: 'boolean', TIMESTAMP: 'timestamp', VARCHAR: 'string' }
  return byDuck[duckType] ?? 'string'
}

/** How each field type is read from the envelope's JSON (json_transform) and turned into its column's value. */
const FIELD_READERS: Record<FieldType, { json: string; column: (value: string) => string }> = {
  string: { json: 'VARCHAR', column: (v) => v },
  integer: { json: 'BIGINT', column: (v) => v },
  number: { json: 'DOUBLE', column: (v) => v },
  boolean: { json: 'BOOLEAN', column: (v) => v },
  // Read as text: RFC 3339 with any offset, stored as the UTC instant.
  timestamp: { json: 'VARCHAR', column: (v) => `make_timestamp(epoch_us(TRY_CAST(${v} AS TIMESTAMPTZ)))` },
  json: { json: 'JSON', column: (v) => `CAST(${v} AS VARCHAR)` },
}

/** The append file: where DuckDB reads it, and this process's descriptor for writing it. */
interface AppendFile {
  path: string
  fd: number
}

/** Each object's insert, from the append file or, when a value there does not convert, from a parameter. */
interface InsertStatements {
  fromFile: DuckDBPreparedStatement
  fromParameter: DuckDBPreparedStatement
}

const sqlString = (text: string) => `'${text.replaceAll("'", "''")}'`

/** A json_transform spec (a type name, or an object of them) as the SQL type it makes. */
function structType(spec: string | { [field: string]: string | object }): string {
  if (typeof spec === 'string') return spec
  return `STRUCT(${Object.entries(spec)
    .map(([name, type]) => `${quote(name)} ${structType(type as string | { [field: string]: string | object })}`)
    .join(', ')})`
}

/**
 * The insert of a batch of record messages `{seq, envs}` (the first record's sequence, the message's envelopes):
 * one a line in `file`, or a JSON array of them in parameter 4; parameter 1 is the time stored. Messages stored
 * before (a redelivery) are left out. A record's sequence counts on from its message's by its place in it.
 * Unnesting a list of the envelopes measured 1.4 µs per record; a lateral json_each over them grew with the
 * message's size (60-130 µs per record at 1,000 to a message).
 * From the parameter, a value that does not convert to its column's type (one sent under an older schema version)
 * becomes null rather than fail the batch; read_ndjson fails instead, and append() then uses the parameter.
 */
function insertStatement(table: string, columns: Column[], from: { file: string } | 'parameter'): string {
  const recordSpec = Object.fromEntries(columns.map((c) => [c.name, FIELD_READERS[c.type].json]))
  const spec = { record_id: 'VARCHAR', received_at: 'BIGINT', source: 'VARCHAR', schema_version: 'INTEGER', job_id: 'VARCHAR', record: recordSpec }
  const fieldValues = columns.map((c) => FIELD_READERS[c.type].column(`r.env.record.${quote(c.name)}`))
  // A message's records are written together, so its first record being there means all of it is. The range
  // (parameters 2 and 3: the write's lowest and highest message) lets DuckDB skip row groups by their bounds.
  const notStored = `WHERE NOT EXISTS (SELECT 1 FROM ${table} s WHERE s._seq = m.seq AND s._seq BETWEEN $2 AND $3)`
  const records =
    from === 'parameter'
      ? `SELECT m.seq + generate_subscripts(m.envs, 1) - 1 AS seq, json_transform(unnest(m.envs), ${sqlString(JSON.stringify(spec))}) AS env
      FROM (SELECT CAST(value->>'seq' AS BIGINT) AS seq, json_extract(value, '$.envs[*]') AS envs FROM json_each(decode($4)::JSON)) m
      ${notStored}`
      : `SELECT m.seq + generate_subscripts(m.envs, 1) - 1 AS seq, unnest(m.envs) AS env
      FROM read_ndjson(${sqlString(from.file)}, columns = {seq: 'BIGINT', envs: ${sqlString(`${structType(spec)}[]`)}}) m
      ${notStored}`
  return `INSERT INTO ${table} (_seq, _record_id, _received_at, _stored_at, _source, _schema_version, _job_id${columns.map((c) => `, ${quote(c.name)}`).join('')})
    SELECT r.seq, r.env.record_id, make_timestamp(r.env.received_at * 1000), $1, r.env.source, r.env.schema_version, r.env.job_id${fieldValues.map((v) => `, ${v}`).join('')}
    FROM (
      ${records}
    ) r`
}

/**
 * Files written before records could share a message numbered rows (and decisions and alerts) by stream
 * sequence alone; renumbers them once to record sequences (recordSeq), so old and new rows order and
 * deduplicate alike.
 */
async function renumberStreamSeqs(conn: DuckDBConnection): Promise<void> {
  await conn.run('CREATE TABLE IF NOT EXISTS sluice_store_meta (key VARCHAR PRIMARY KEY, value VARCHAR NOT NULL)')
  const marker = 'records_per_message'
  const done = await conn.runAndReadAll('SELECT value FROM sluice_store_meta WHERE key = ?', [marker])
  if (done.currentRowCount > 0) return
  const columns = await conn.runAndReadAll(
    `SELECT c.table_name AS t, list(c.column_name) AS cols FROM information_schema.columns c
     JOIN information_schema.tables tb ON tb.table_name = c.table_name AND tb.table_type = 'BASE TABLE'
     WHERE c.column_name IN ('_seq', 'record_seq') GROUP BY c.table_name`,
  )
  await conn.run('BEGIN TRANSACTION')
  for (const { t, cols } of columns.getRowObjectsJS() as { t: string; cols: string[] }[]) {
    await conn.run(`UPDATE ${quote(t)} SET ${cols.map((c) => `${quote(c)} = ${quote(c)} * ${RECORDS_PER_MESSAGE}`).join(', ')}`)
  }
  await conn.run('INSERT INTO sluice_store_meta VALUES (?, ?)', [marker, String(RECORDS_PER_MESSAGE)])
  await conn.run('COMMIT')
}

function toView(row: Record<string, unknown>, columns: Column[]): RecordView {
  const data: Record<string, unknown> = {}
  for (const { name, type } of columns) data[name] = fromDuck(row[name], type)
  return {
    record_id: row._record_id as string,
    seq: Number(row._seq),
    received_at: (row._received_at as Date).toISOString(),
    stored_at: (row._stored_at as Date).toISOString(),
    source: row._source as string,
    schema_version: row._schema_version as number,
    job_id: (row._job_id as string | null) ?? null,
    data,
  }
}

function fromDuck(value: unknown, type: FieldType): unknown {
  if (value === null || value === undefined) return null
  if (type === 'timestamp') return (value as Date).toISOString()
  if (type === 'integer') return Number(value)
  if (type === 'json') return JSON.parse(value as string)
  return value
}
