import { lstat } from 'node:fs/promises'
import { join, posix } from 'node:path'

/** A path that would leave the jail, or pass through a symbolic link. */
export class JailEscape extends Error {}

/**
 * One SFTP user's view of the disk: the virtual `/` is `root`, and no path leaves it. `..` is resolved as text
 * against the virtual root (it cannot climb above `/`), and every existing component of the real path is
 * checked not to be a symbolic link, so neither a crafted path nor a link placed in the folder reaches
 * outside. SFTP paths are taken literally: `%2e%2e` is a file name, not `..`.
 */
export class Jail {
  /** The real (symlink-free) path of the user's folder. */
  readonly root: string

  constructor(root: string) {
    this.root = root
  }

  /** The canonical virtual path: absolute, `..` and `.` resolved, no trailing slash. */
  static virtual(path: string): string {
    const normal = posix.normalize(`/${path}`)
    return normal.length > 1 && normal.endsWith('/') ? normal.slice(0, -1) : normal
  }

  /** The real path of a virtual one; throws JailEscape for a NUL byte or a symbolic link on the way. */
  async resolve(path: string): Promise<string> {
    if (path.includes('\0')) throw new JailEscape('a path may not contain NUL')
    let real = this.root
    for (const part of Jail.virtual(path).split('/').filter(Boolean)) {
      real = join(real, part)
      const stats = await lstat(real).catch((err: NodeJS.ErrnoException) => {
        if (err.code === 'ENOENT' || err.code === 'ENOTDIR') return undefined
        throw err
      })
      if (stats?.isSymbolicLink()) throw new JailEscape(`${Jail.virtual(path)} passes through a symbolic link`)
    }
    return real
  }
}
