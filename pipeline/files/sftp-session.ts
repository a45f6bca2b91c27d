import { randomBytes } from 'node:crypto'
import { constants as fsc, type Stats } from 'node:fs'
import { copyFile, type FileHandle, lstat, mkdir, open, readdir, rename, rm, rmdir, unlink, utimes } from 'node:fs/promises'
import { basename, dirname, join } from 'node:path'
import ssh2, { type Attributes, type FileEntry, type InputAttributes, type SFTPWrapper } from 'ssh2'
import type { Logger } from '../logger.ts'
import { Jail, JailEscape } from './jail.ts'

// ssh2 is CommonJS: its named exports are not visible to an ES module import.
const { OPEN_MODE, STATUS_CODE } = ssh2.utils.sftp

/** A request refused with a given SFTP status and a message the client shows. */
class SftpRefusal extends Error {
  readonly status: number
  constructor(status: number, message: string) {
    super(message)
    this.status = status
  }
}

/** An upload in progress: written to a hidden temporary name, renamed to its own when the client closes it. */
interface Upload {
  temp: string
  target: string
  virtual: string
  bytes: number
}
type OpenFile = { kind: 'file'; file: FileHandle; upload?: Upload }
type OpenDir = { kind: 'dir'; real: string; entries?: FileEntry[]; sent: number }

/** READDIR answers in pages, so a large folder never makes a message over the client's size limit. */
const ENTRIES_PER_READDIR = 100

export interface SftpSessionOptions {
  jail: Jail
  /** A file larger than this is refused while it is written (batch.maxBytes). */
  maxFileBytes: number
  log: Logger
  /** Called once an upload is complete and under its own name. */
  onUpload: (upload: { virtual: string; bytes: number }) => void
}

function attributesOf(stats: Stats): Attributes {
  return {
    mode: stats.mode,
    uid: stats.uid,
    gid: stats.gid,
    size: stats.size,
    atime: Math.floor(stats.atimeMs / 1000),
    mtime: Math.floor(stats.mtimeMs / 1000),
  }
}

/** `ls -l` style line: OpenSSH's `ls -l` prints it as it is. */
function longnameOf(name: string, stats: Stats): string {
  const kind = stats.isDirectory() ? 'd' : '-'
  const perms = [6, 3, 0].map((shift) => ['r', 'w', 'x'].map((c, i) => ((stats.mode >> shift) & (4 >> i) ? c : '-')).join('')).join('')
  const when = stats.mtime.toISOString().slice(0, 16).replace('T', ' ')
  return `${kind}${perms}    1 sluice   sluice   ${String(stats.size).padStart(12)} ${when} ${name}`
}

function statusOf(err: unknown): { code: number; message: string } {
  if (err instanceof SftpRefusal) return { code: err.status, message: err.message }
  if (err instanceof JailEscape) return { code: STATUS_CODE.PERMISSION_DENIED, message: 'permission denied' }
  switch ((err as NodeJS.ErrnoException).code) {
    case 'ENOENT':
    case 'ENOTDIR':
      return { code: STATUS_CODE.NO_SUCH_FILE, message: 'no such file or directory' }
    case 'EACCES':
    case 'EPERM':
    case 'ELOOP':
      return { code: STATUS_CODE.PERMISSION_DENIED, message: 'permission denied' }
    case 'EEXIST':
    case 'ENOTEMPTY':
      return { code: STATUS_CODE.FAILURE, message: (err as Error).message.split(':')[0] }
    default:
      return { code: STATUS_CODE.FAILURE, message: 'failure' }
  }
}

/**
 * Serves one SFTP channel inside a user's jail: the requests OpenSSH's `sftp` makes (ls, get, put, mkdir,
 * rename, rm, rmdir) and nothing that could reach outside (no symbolic links, no extensions). An upload is
 * written under a hidden temporary name and renamed to its own only when the client closes it, so the drop
 * watcher never sees half a file; an upload cut off is deleted.
 */
export function serveSftp(sftp: SFTPWrapper, opts: SftpSessionOptions): void {
  const { jail, log } = opts
  const handles = new Map<number, OpenFile | OpenDir>()
  let nextHandle = 0

  function register(open: OpenFile | OpenDir): Buffer {
    const id = nextHandle++
    handles.set(id, open)
    const handle = Buffer.alloc(4)
    handle.writeUInt32BE(id)
    return handle
  }
  function opened<K extends 'file' | 'dir'>(handle: Buffer, kind: K): Extract<OpenFile | OpenDir, { kind: K }> {
    const open = handle.length === 4 ? handles.get(handle.readUInt32BE(0)) : undefined
    if (open?.kind !== kind) throw new SftpRefusal(STATUS_CODE.FAILURE, 'invalid handle')
    return open as Extract<OpenFile | OpenDir, { kind: K }>
  }
  /** Runs a request; whatever it throws becomes the status answer. */
  function answer(reqId: number, work: () => Promise<void>): void {
    work().catch((err) => {
      const { code, message } = statusOf(err)
      if (code === STATUS_CODE.FAILURE && !(err instanceof SftpRefusal)) log.warn({ err }, 'sftp request failed')
      sftp.status(reqId, code, message)
    })
  }
  /** The real path of a virtual one; the jail's root itself may not be replaced, renamed or removed. */
  async function below(path: string): Promise<string> {
    const real = await jail.resolve(path)
    if (real === jail.root) throw new SftpRefusal(STATUS_CODE.PERMISSION_DENIED, 'permission denied')
    return real
  }

  async function openForWrite(path: string, flags: number): Promise<Buffer> {
    const target = await below(path)
    const present = await lstat(target).catch(() => undefined)
    if (present?.isDirectory()) throw new SftpRefusal(STATUS_CODE.FAILURE, 'is a directory')
    if (present && flags & OPEN_MODE.EXCL) throw new SftpRefusal(STATUS_CODE.FAILURE, 'file exists')
    if (!present && !(flags & OPEN_MODE.CREAT)) throw new SftpRefusal(STATUS_CODE.NO_SUCH_FILE, 'no such file')
    const temp = join(dirname(target), `.${basename(target)}.${randomBytes(4).toString('hex')}.part`)
    // Without TRUNC the client changes the file in place (a resumed upload): start from its content.
    const resumed = present && !(flags & OPEN_MODE.TRUNC)
    if (resumed) await copyFile(target, temp)
    const mode = (flags & OPEN_MODE.READ ? fsc.O_RDWR : fsc.O_WRONLY) | (flags & OPEN_MODE.APPEND ? fsc.O_APPEND : 0)
    const file = await open(temp, mode | fsc.O_CREAT | fsc.O_NOFOLLOW, 0o640)
    return register({ kind: 'file', file, upload: { temp, target, virtual: Jail.virtual(path), bytes: resumed ? present.size : 0 } })
  }

  async function closeFile(open: OpenFile): Promise<void> {
    await open.file.close()
    const upload = open.upload
    if (!upload) return
    try {
      await rename(upload.temp, upload.target)
    } catch (err) {
      await rm(upload.temp, { force: true })
      throw err
    }
    opts.onUpload({ virtual: upload.virtual, bytes: upload.bytes })
  }

  async function listing(real: string): Promise<FileEntry[]> {
    const entries: FileEntry[] = []
    for (const name of await readdir(real)) {
      const stats = await lstat(join(real, name)).catch(() => undefined)
      // Links are never followed, so they are not shown either.
      if (!stats || !(stats.isFile() || stats.isDirectory())) continue
      entries.push({ filename: name, longname: longnameOf(name, stats), attrs: attributesOf(stats) })
    }
    return entries
  }

  async function setTimes(attrs: InputAttributes, apply: (atime: number | Date, mtime: number | Date) => Promise<void>): Promise<void> {
    // Times only (`put -p`): modes and owners stay Sluice's, so a user cannot lock the watcher out of a file.
    if (attrs.atime !== undefined && attrs.mtime !== undefined) await apply(attrs.atime, attrs.mtime)
  }

  sftp.on('REALPATH', (reqId, path) => {
    const virtual = Jail.virtual(path)
    sftp.name(reqId, [{ filename: virtual, longname: virtual, attrs: {} as Attributes }])
  })
  // Links are refused on the way, so STAT and LSTAT are one.
  const attrsOfPath = (reqId: number, path: string) => answer(reqId, async () => sftp.attrs(reqId, attributesOf(await lstat(await jail.resolve(path)))))
  sftp.on('STAT', attrsOfPath)
  sftp.on('LSTAT', attrsOfPath)
  sftp.on('OPEN', (reqId, path, flags) =>
    answer(reqId, async () => {
      if (flags & (OPEN_MODE.WRITE | OPEN_MODE.APPEND | OPEN_MODE.CREAT | OPEN_MODE.TRUNC)) return sftp.handle(reqId, await openForWrite(path, flags))
      const file = await open(await below(path), fsc.O_RDONLY | fsc.O_NOFOLLOW)
      sftp.handle(reqId, register({ kind: 'file', file }))
    }),
  )
  sftp.on('READ', (reqId, handle, offset, length) =>
    answer(reqId, async () => {
      const { file } = opened(handle, 'file')
      const { bytesRead, buffer } = await file.read(Buffer.alloc(Math.min(length, 1 << 18)), 0, Math.min(length, 1 << 18), offset)
      if (bytesRead === 0) return sftp.status(reqId, STATUS_CODE.EOF)
      sftp.data(reqId, buffer.subarray(0, bytesRead))
    }),
  )
  sftp.on('WRITE', (reqId, handle, offset, data) =>
    answer(reqId, async () => {
      const { file, upload } = opened(handle, 'file')
      if (!upload) throw new SftpRefusal(STATUS_CODE.PERMISSION_DENIED, 'the file is open for reading')
      if (offset + data.length > opts.maxFileBytes) throw new SftpRefusal(STATUS_CODE.FAILURE, `files are limited to ${opts.maxFileBytes} bytes`)
      await file.write(data, 0, data.length, offset)
      upload.bytes = Math.max(upload.bytes, offset + data.length)
      sftp.status(reqId, STATUS_CODE.OK)
    }),
  )
  sftp.on('FSTAT', (reqId, handle) => answer(reqId, async () => sftp.attrs(reqId, attributesOf(await opened(handle, 'file').file.stat()))))
  sftp.on('FSETSTAT', (reqId, handle, attrs) =>
    answer(reqId, async () => {
      const { file } = opened(handle, 'file')
      await setTimes(attrs, (atime, mtime) => file.utimes(atime, mtime))
      sftp.status(reqId, STATUS_CODE.OK)
    }),
  )
  sftp.on('SETSTAT', (reqId, path, attrs) =>
    answer(reqId, async () => {
      const real = await jail.resolve(path)
      await setTimes(attrs, (atime, mtime) => utimes(real, atime, mtime))
      sftp.status(reqId, STATUS_CODE.OK)
    }),
  )
  sftp.on('CLOSE', (reqId, handle) =>
    answer(reqId, async () => {
      const open = handle.length === 4 ? handles.get(handle.readUInt32BE(0)) : undefined
      if (!open) throw new SftpRefusal(STATUS_CODE.FAILURE, 'invalid handle')
      handles.delete(handle.readUInt32BE(0))
      if (open.kind === 'file') await closeFile(open)
      sftp.status(reqId, STATUS_CODE.OK)
    }),
  )
  sftp.on('OPENDIR', (reqId, path) =>
    answer(reqId, async () => {
      const real = await jail.resolve(path)
      if (!(await lstat(real)).isDirectory()) throw new SftpRefusal(STATUS_CODE.FAILURE, 'not a directory')
      sftp.handle(reqId, register({ kind: 'dir', real, sent: 0 }))
    }),
  )
  sftp.on('READDIR', (reqId, handle) =>
    answer(reqId, async () => {
      const dir = opened(handle, 'dir')
      dir.entries ??= await listing(dir.real)
      if (dir.sent >= dir.entries.length) return sftp.status(reqId, STATUS_CODE.EOF)
      const page = dir.entries.slice(dir.sent, dir.sent + ENTRIES_PER_READDIR)
      dir.sent += page.length
      sftp.name(reqId, page)
    }),
  )
  sftp.on('MKDIR', (reqId, path) =>
    answer(reqId, async () => {
      await mkdir(await below(path))
      sftp.status(reqId, STATUS_CODE.OK)
    }),
  )
  sftp.on('RMDIR', (reqId, path) =>
    answer(reqId, async () => {
      await rmdir(await below(path))
      sftp.status(reqId, STATUS_CODE.OK)
    }),
  )
  sftp.on('REMOVE', (reqId, path) =>
    answer(reqId, async () => {
      await unlink(await below(path))
      sftp.status(reqId, STATUS_CODE.OK)
    }),
  )
  sftp.on('RENAME', (reqId, from, to) =>
    answer(reqId, async () => {
      const [source, target] = [await below(from), await below(to)]
      // SFTP v3 semantics: a rename never replaces an existing file.
      if (await lstat(target).catch(() => undefined)) throw new SftpRefusal(STATUS_CODE.FAILURE, 'the target exists')
      await rename(source, target)
      sftp.status(reqId, STATUS_CODE.OK)
    }),
  )
  const noLinks = (reqId: number) => sftp.status(reqId, STATUS_CODE.PERMISSION_DENIED, 'symbolic links are not allowed')
  sftp.on('READLINK', noLinks)
  sftp.on('SYMLINK', noLinks)
  sftp.on('EXTENDED', (reqId) => sftp.status(reqId, STATUS_CODE.OP_UNSUPPORTED, 'not supported'))

  // The client is done (EOF): close the channel, as OpenSSH waits for that before it exits.
  sftp.on('end', () => sftp.end())
  // A session that ends with files open: close them, and drop unfinished uploads.
  sftp.on('close', () => {
    for (const open of handles.values()) {
      if (open.kind !== 'file') continue
      void open.file
        .close()
        .catch(() => undefined)
        .then(() => open.upload && rm(open.upload.temp, { force: true }))
    }
    handles.clear()
  })
}
