/** Settings a JSON envelope payload carries beside its records. */
export interface PayloadSettings {
  object?: string
  update_schema?: boolean
  evaluate_rules?: boolean
}

/** Where the splitter is in the payload's outer structure; a record's own text is only measured, never parsed here. */
type Place =
  | 'start'
  | 'array-element-or-end'
  | 'array-element'
  | 'array-comma-or-end'
  | 'object-key-or-end'
  | 'object-key'
  | 'object-colon'
  | 'object-value'
  | 'object-comma-or-end'
  | 'done'

/** The payload's outer structure is not JSON. */
export class JsonPayloadError extends Error {}

const QUOTE = 0x22
const BACKSLASH = 0x5c
const OPEN_BRACE = 0x7b
const CLOSE_BRACE = 0x7d
const OPEN_BRACKET = 0x5b
const CLOSE_BRACKET = 0x5d
const COMMA = 0x2c
const COLON = 0x3a

function isSpace(c: number): boolean {
  return c === 0x20 || c === 0x0a || c === 0x0d || c === 0x09
}

/** A character that ends a number or literal (true, false, null) at the top of a value. */
function endsLiteral(c: number): boolean {
  return c === COMMA || c === CLOSE_BRACKET || c === CLOSE_BRACE || isSpace(c)
}

/**
 * Splits a JSON payload, as its text streams in, into the text of each record, for JSON.parse: a JSON array of
 * records, or `{"object": ..., "records": [...], "update_schema": ..., "evaluate_rules": ...}` (the members in any
 * order; `settings` receives the others as they are read). It follows only the outer structure, and strings and
 * brackets within a value to find where the value ends: a tokenizing parser in JavaScript took 30-60 µs a record
 * (200 µs awaited token by token), JSON.parse of the record's text takes a few.
 */
export class JsonRecordSplitter {
  readonly #settings: PayloadSettings
  #place: Place = 'start'
  #topLevel: 'array' | 'object' | undefined
  /** The member of the top-level object being read. */
  #key = ''
  /** The value being measured: its text so far, its bracket depth, whether inside one of its strings. */
  #value: string[] = []
  #depth = 0
  #inString = false
  #escaped = false
  /** The value is a number or true, false, null: it ends at the first character that cannot be part of it. */
  #literal = false
  #measuring = false
  /** What the value being measured is: a record, or a member of the top-level object. */
  #valueIsRecord = false

  constructor(settings: PayloadSettings) {
    this.#settings = settings
  }

  /** The records whose text ends in `chunk` (and the chunks before). Throws JsonPayloadError on a broken structure. */
  push(chunk: string): string[] {
    const records: string[] = []
    let i = this.#place === 'start' && chunk.charCodeAt(0) === 0xfeff ? 1 : 0
    while (i < chunk.length) {
      if (this.#measuring) {
        i = this.#measure(chunk, i, records)
        continue
      }
      const c = chunk.charCodeAt(i)
      if (isSpace(c)) {
        i++
        continue
      }
      switch (this.#place) {
        case 'start':
          if (c === OPEN_BRACKET) {
            this.#topLevel = 'array'
            this.#place = 'array-element-or-end'
          } else if (c === OPEN_BRACE) {
            this.#topLevel = 'object'
            this.#place = 'object-key-or-end'
          } else throw new JsonPayloadError('a JSON payload must be an array of records or an object with a records array')
          i++
          break
        case 'array-element-or-end':
        case 'array-element':
          if (c === CLOSE_BRACKET && this.#place === 'array-element-or-end') {
            this.#place = this.#topLevel === 'array' ? 'done' : 'object-comma-or-end'
            i++
          } else this.#startValue(true)
          break
        case 'array-comma-or-end':
          if (c === COMMA) this.#place = 'array-element'
          else if (c === CLOSE_BRACKET) this.#place = this.#topLevel === 'array' ? 'done' : 'object-comma-or-end'
          else throw this.#unexpected(c, 'a comma or the end of the records array')
          i++
          break
        case 'object-key-or-end':
        case 'object-key':
          if (c === CLOSE_BRACE && this.#place === 'object-key-or-end') {
            this.#place = 'done'
            i++
          } else if (c === QUOTE) this.#startValue(false)
          else throw this.#unexpected(c, 'a member name')
          break
        case 'object-colon':
          if (c !== COLON) throw this.#unexpected(c, 'a colon')
          this.#place = 'object-value'
          i++
          break
        case 'object-value':
          if (this.#key === 'records' && c === OPEN_BRACKET) {
            this.#place = 'array-element-or-end'
            i++
          } else this.#startValue(false)
          break
        case 'object-comma-or-end':
          if (c === COMMA) this.#place = 'object-key'
          else if (c === CLOSE_BRACE) this.#place = 'done'
          else throw this.#unexpected(c, 'a comma or the end of the object')
          i++
          break
        case 'done':
          throw this.#unexpected(c, 'nothing more')
      }
    }
    return records
  }

  /** Throws unless the payload ended where a complete document ends. */
  end(): void {
    if (this.#place !== 'done') throw new JsonPayloadError('the JSON ends before the payload is complete')
  }

  #startValue(isRecord: boolean): void {
    this.#measuring = true
    this.#valueIsRecord = isRecord
    this.#value = []
    this.#depth = 0
    this.#inString = false
    this.#escaped = false
    this.#literal = false
  }

  /** Reads `chunk` from `start` until the value being measured ends or the chunk does; returns where it stopped. */
  #measure(chunk: string, start: number, records: string[]): number {
    let i = start
    // The first character says what the value is: a container or string ends at its closing character, a literal
    // at the first character that cannot be part of it.
    if (this.#literal) return this.#measureLiteral(chunk, i, records)
    if (this.#value.length === 0 && this.#depth === 0 && !this.#inString) {
      const first = chunk.charCodeAt(i)
      if (first !== OPEN_BRACE && first !== OPEN_BRACKET && first !== QUOTE) {
        this.#literal = true
        return this.#measureLiteral(chunk, i, records)
      }
    }
    for (; i < chunk.length; i++) {
      const c = chunk.charCodeAt(i)
      if (this.#inString) {
        if (this.#escaped) this.#escaped = false
        else if (c === BACKSLASH) this.#escaped = true
        else if (c === QUOTE) {
          this.#inString = false
          if (this.#depth === 0) return this.#finish(chunk, start, i + 1, records)
        }
      } else if (c === QUOTE) this.#inString = true
      else if (c === OPEN_BRACE || c === OPEN_BRACKET) this.#depth++
      else if (c === CLOSE_BRACE || c === CLOSE_BRACKET) {
        this.#depth--
        if (this.#depth === 0) return this.#finish(chunk, start, i + 1, records)
      }
    }
    this.#value.push(chunk.slice(start))
    return i
  }

  #measureLiteral(chunk: string, start: number, records: string[]): number {
    let i = start
    while (i < chunk.length && !endsLiteral(chunk.charCodeAt(i))) i++
    if (i === chunk.length && i > start) {
      this.#value.push(chunk.slice(start))
      return i
    }
    if (i === start && this.#value.length === 0) throw this.#unexpected(chunk.charCodeAt(i), 'a value')
    this.#value.push(chunk.slice(start, i))
    this.#complete(records)
    return i
  }

  #finish(chunk: string, start: number, end: number, records: string[]): number {
    this.#value.push(chunk.slice(start, end))
    this.#complete(records)
    return end
  }

  /** The value's text is complete: a record, a member name, or another member's value. */
  #complete(records: string[]): void {
    const text = this.#value.length === 1 ? this.#value[0] : this.#value.join('')
    this.#value = []
    this.#measuring = false
    if (this.#valueIsRecord) {
      records.push(text)
      this.#place = 'array-comma-or-end'
      return
    }
    if (this.#place === 'object-key-or-end' || this.#place === 'object-key') {
      this.#key = JSON.parse(text) as string
      this.#place = 'object-colon'
      return
    }
    const value: unknown = JSON.parse(text)
    if (this.#key === 'object' && typeof value === 'string') this.#settings.object = value
    if (this.#key === 'update_schema' && typeof value === 'boolean') this.#settings.update_schema = value
    if (this.#key === 'evaluate_rules' && typeof value === 'boolean') this.#settings.evaluate_rules = value
    this.#place = 'object-comma-or-end'
  }

  #unexpected(c: number, expected: string): JsonPayloadError {
    return new JsonPayloadError(`expected ${expected}, found ${JSON.stringify(String.fromCharCode(c))}`)
  }
}
