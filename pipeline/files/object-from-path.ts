import { posix } from 'node:path'
import type { PayloadFormat } from '../../storage/index.ts'
import { payloadFormatOfFileName } from '../batch/upload.ts'

/** Folders Sluice keeps in every drop root for the files it took; nothing in them is ingested. */
export const KEPT_FOLDERS = { processing: 'processing', processed: 'processed', failed: 'failed' } as const

/** Appended to a file's name, asks for its content to be ingested even if the same content was before. */
export const FORCE_SUFFIX = '.force'

/**
 * Names of files still being written, by convention of the tools that write them: hidden (dot) files, and the
 * temporary suffixes of SFTP clients and copy tools (`.part`, `.filepart`, `.tmp`, ...). They are taken once
 * renamed to their own name.
 */
export function isTemporaryName(name: string): boolean {
  return name.startsWith('.') || name.endsWith('~') || /\.(part|partial|filepart|tmp|temp|crdownload)$/i.test(name)
}

/** What a dropped file's path says about it. */
export interface DroppedFile {
  /** Its name, without a `.force` suffix. */
  name: string
  force: boolean
  format?: { format: PayloadFormat; compressed: boolean }
  /** null when neither its folder nor its name says (a JSON file may still say so itself). */
  object: string | null
}

/**
 * The object of a file at `path` (relative to its drop root): the first folder when it names an object
 * (`transaction/2026/11/any-name.csv`), else the object its name starts with, followed by `_`, `-` or `.`
 * (`transaction_2026-11-23.csv`, `account-export.ndjson.gz`); the longest such object wins, so `card` and
 * `card_event` cannot be confused.
 */
export function describeDroppedFile(path: string, objects: readonly string[]): DroppedFile {
  const segments = path.split(posix.sep)
  const fileName = segments[segments.length - 1]
  const force = fileName.toLowerCase().endsWith(FORCE_SUFFIX)
  const name = force ? fileName.slice(0, -FORCE_SUFFIX.length) : fileName
  const folder = segments.length > 1 ? segments[0].toLowerCase() : undefined
  const lower = name.toLowerCase()
  const byName = objects.filter((o) => lower.startsWith(o) && /[-_.]/.test(lower.charAt(o.length))).sort((a, b) => b.length - a.length)[0]
  const object = folder && objects.includes(folder) ? folder : (byName ?? null)
  return { name, force, format: payloadFormatOfFileName(name), object }
}
