import { createReadStream } from 'node:fs'
import { createInterface } from 'node:readline'
import { type Readable, Transform } from 'node:stream'
import { createGunzip } from 'node:zlib'
import Papa from 'papaparse'
import type { ObjectSchemaDoc, PayloadFormat } from '../../storage/index.ts'
import { JsonRecordSplitter, type PayloadSettings } from './json-records.ts'

export type { PayloadSettings }

/**
 * One record of a payload, or why its row could not be read as a record. A CSV row comes as its cells, made into
 * a record (typeCsvRecord) by the schema current when it is published.
 */
export type PayloadItem = { row: number; record: unknown } | { row: number; cells: string[]; header: readonly string[] } | { row: number; unreadable: string }

/** The payload as a whole cannot be read (broken CSV quoting, truncated JSON, over the size limit): the job fails. */
export class PayloadError extends Error {}

/** Counts decompressed bytes and stops the stream past the limit, so a gzip bomb cannot fill the disk or memory. */
function byteLimit(maxBytes: number): Transform {
  let seen = 0
  return new Transform({
    transform(chunk: Buffer, _enc, done) {
      seen += chunk.length
      if (seen > maxBytes) return done(new PayloadError(`the payload is larger than the limit of ${maxBytes} bytes once decompressed`))
      done(null, chunk)
    },
  })
}

function openPayload(path: string, compressed: boolean, maxBytes: number): Readable {
  const file = createReadStream(path, { highWaterMark: 1 << 20 })
  const limit = byteLimit(maxBytes)
  const forward = (err: Error) => limit.destroy(err)
  if (!compressed) return file.on('error', forward).pipe(limit)
  const gunzip = createGunzip()
  gunzip.on('error', (err) => limit.destroy(new PayloadError(`the payload is not valid gzip: ${err.message}`)))
  return file.on('error', forward).pipe(gunzip).pipe(limit)
}

/** Records of the line-by-line formats are handed on this many at a time: one await per record costs more than reading it. */
const ITEMS_PER_YIELD = 1024

async function* readNdjson(input: Readable): AsyncGenerator<PayloadItem[]> {
  let row = 0
  let items: PayloadItem[] = []
  for await (const line of createInterface({ input, crlfDelay: Number.POSITIVE_INFINITY })) {
    if (line.trim() === '') continue
    row++
    try {
      items.push({ row, record: JSON.parse(line) })
    } catch (err) {
      items.push({ row, unreadable: `line ${row} is not valid JSON: ${(err as Error).message}` })
    }
    if (items.length >= ITEMS_PER_YIELD) {
      yield items
      items = []
    }
  }
  if (items.length > 0) yield items
}

/**
 * Text parsed at a time: a few hundred rows, which the worker makes into envelopes before the next piece is
 * parsed. Their cells then die young; a megabyte's rows at once lived through garbage collections and were the
 * largest part of what the event loop promoted to the old generation (docs/performance.md).
 */
const PARSE_CHARS = 1 << 17

/** Longest CSV row read: past it, a quote left open would otherwise pull the rest of the file into one row. */
const MAX_CSV_ROW_CHARS = 1 << 20

/**
 * The CSV's rows, a piece of text (PARSE_CHARS) at a time, parsed by Papa Parse's core parser. A row cut off
 * by the piece's end waits for the next piece. The first line's break (CRLF or LF) is the file's;
 * quoted fields may hold either. A malformed or unclosed quote makes the whole payload unreadable.
 */
async function* csvRows(input: Readable): AsyncGenerator<string[][]> {
  input.setEncoding('utf8')
  let parser: Papa.Parser | undefined
  let rest = ''
  let rowsBefore = 0
  const parse = (text: string, final: boolean): string[][] => {
    if (!parser) {
      const firstBreak = text.indexOf('\n')
      if (firstBreak < 0 && !final) {
        rest = text
        return []
      }
      parser = new Papa.Parser({ delimiter: ',', newline: text[firstBreak - 1] === '\r' ? '\r\n' : '\n', quoteChar: '"' })
    }
    const { data, errors, meta } = parser.parse(text, 0, !final) as { data: string[][]; errors: Papa.ParseError[]; meta: { cursor: number } }
    // A row cut off by the chunk's end can look malformed; it is parsed again whole with the next chunk.
    const broken = errors.find((e) => e.type === 'Quotes' && (final || (e.row ?? 0) < data.length))
    if (broken) throw new PayloadError(`the CSV cannot be read at row ${rowsBefore + (broken.row ?? 0)}: ${broken.message}`)
    rest = text.slice(meta.cursor)
    if (rest.length > MAX_CSV_ROW_CHARS)
      throw new PayloadError(`the CSV has a row longer than ${MAX_CSV_ROW_CHARS} characters after row ${rowsBefore + data.length}: is a quote left open?`)
    rowsBefore += data.length
    return data
  }
  let first = true
  for await (const chunk of input as AsyncIterable<string>) {
    const decoded = first ? chunk.replace(/^\uFEFF/, '') : chunk
    first = false
    for (let at = 0; at < decoded.length; at += PARSE_CHARS) yield parse(rest + decoded.slice(at, at + PARSE_CHARS), false)
  }
  if (rest !== '') yield parse(rest, true)
}

/** The CSV's header, then its data rows a chunk at a time (empty lines are no rows). */
async function* csvBody(input: Readable): AsyncGenerator<{ header: string[]; rows: string[][] }> {
  let header: string[] | undefined
  for await (const chunk of csvRows(input)) {
    const rows = chunk.filter((cells) => !(cells.length === 1 && cells[0] === ''))
    if (!header && rows.length > 0) header = (rows.shift() as string[]).map((c) => c.trim())
    if (header && rows.length > 0) yield { header, rows }
  }
}

async function* readCsv(input: Readable): AsyncGenerator<PayloadItem[]> {
  let row = 0
  for await (const { header, rows } of csvBody(input)) {
    const items: PayloadItem[] = []
    for (const cells of rows) {
      row++
      if (cells.length !== header.length) {
        items.push({ row, unreadable: `row ${row} has ${cells.length} cells, the header has ${header.length}` })
        continue
      }
      items.push({ row, cells, header })
    }
    yield items
  }
}

/** A JSON array of records, or `{"object": ..., "records": [...], "update_schema": ..., "evaluate_rules": ...}`. */
async function* readJson(input: Readable, settings: PayloadSettings): AsyncGenerator<PayloadItem[]> {
  const splitter = new JsonRecordSplitter(settings)
  let row = 0
  let items: PayloadItem[] = []
  try {
    for await (const chunk of input.setEncoding('utf8') as AsyncIterable<string>) {
      for (const text of splitter.push(chunk)) {
        const record: unknown = JSON.parse(text)
        row++
        items.push({ row, record })
        if (items.length >= ITEMS_PER_YIELD) {
          yield items
          items = []
        }
      }
    }
    splitter.end()
    if (items.length > 0) yield items
  } catch (err) {
    if (err instanceof PayloadError) throw err
    throw new PayloadError(`the JSON cannot be read after record ${row}: ${(err as Error).message}`)
  }
}

/**
 * Streams a stored payload a run of records at a time, never holding it whole. `settings` receives what a JSON envelope
 * says about itself (object, flags) as it is read.
 */
export function readPayload(
  path: string,
  format: PayloadFormat,
  opts: { compressed: boolean; maxBytes: number; settings?: PayloadSettings },
): AsyncGenerator<PayloadItem[]> {
  const input = openPayload(path, opts.compressed, opts.maxBytes)
  if (format === 'csv') return readCsv(input)
  if (format === 'ndjson') return readNdjson(input)
  return readJson(input, opts.settings ?? {})
}

/**
 * Counts a stored payload's records a run at a time, for the first pass over it. CSV rows are counted as they
 * are parsed, without being made into records: that took most of the pass's time.
 */
export async function* countPayload(
  path: string,
  format: PayloadFormat,
  opts: { compressed: boolean; maxBytes: number; settings?: PayloadSettings },
): AsyncGenerator<number> {
  if (format !== 'csv') {
    for await (const items of readPayload(path, format, opts)) yield items.length
    return
  }
  for await (const { rows } of csvBody(openPayload(path, opts.compressed, opts.maxBytes))) yield rows.length
}

const NUMBER = /^[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?$/

/**
 * CSV cells are text: give each the type its schema field has, so the record is validated like a JSON one.
 * An empty cell is null. A cell that does not convert stays text, and validation names it.
 */
export function typeCsvRecord(header: readonly string[], cells: readonly string[], schema: ObjectSchemaDoc | undefined): Record<string, unknown> {
  // Straight from the row's cells: an object of the cells by name first, then its entries, cost twice the time.
  const record: Record<string, unknown> = {}
  for (let i = 0; i < header.length; i++) {
    const name = header[i]
    const text = cells[i]
    if (text === '') {
      record[name] = null
      continue
    }
    switch (schema?.fields[name]?.type) {
      case 'integer':
      case 'number':
        record[name] = NUMBER.test(text.trim()) ? Number(text) : text
        break
      case 'boolean': {
        const lower = text.trim().toLowerCase()
        record[name] = lower === 'true' ? true : lower === 'false' ? false : text
        break
      }
      case 'json':
        try {
          record[name] = JSON.parse(text)
        } catch {
          record[name] = text
        }
        break
      default:
        record[name] = text
    }
  }
  return record
}
