import { mkdirSync } from 'node:fs'
import { join } from 'node:path'
import { type SchemaRegistry, SFTP_USER_NAME, type SftpUser, type SftpUserStore } from '../../storage/index.ts'
import { type FieldError, SluiceError } from '../errors.ts'
import { filesLayout } from './file-ingestion.ts'
import { isPublicKeyLine } from './sftp-server.ts'

/** An SFTP login faces the network: shorter passwords are refused. */
export const MIN_SFTP_PASSWORD_LENGTH = 10
export const SFTP_USER_NAME_RULE = 'a user name is 1-32 characters: lowercase letters, digits, _ and -, starting with a letter'

/** An SFTP user as the API shows it: how it logs in, never its password's hash. */
export interface SftpUserView {
  username: string
  /** Whether it may log in by password. */
  password: boolean
  /** Its authorized public keys (OpenSSH lines). */
  public_keys: string[]
  created_at: string
}

export const sftpUserView = (user: SftpUser): SftpUserView => ({
  username: user.name,
  password: user.password_hash !== null,
  public_keys: user.public_keys,
  created_at: user.created_at,
})

/**
 * Adds an SFTP user who logs in by password, public keys or both, and a folder per object in its jail so it
 * sees where files go; the CLI and the API both come here. The SFTP server reads users at each login, so the
 * user can log in at once. Throws SLUICE_BAD_REQUEST naming every field at fault (pointers into the
 * `POST /sftp-users` body), SLUICE_SFTP_USER_EXISTS when the name is taken.
 */
export function addSftpUser(
  users: SftpUserStore,
  registry: SchemaRegistry,
  dataDir: string,
  opts: { name: string; password?: string; publicKeys: string[]; actor: string },
): SftpUserView {
  const { name, password, publicKeys } = opts
  const errors: FieldError[] = []
  if (!SFTP_USER_NAME.test(name)) errors.push({ pointer: '/username', message: SFTP_USER_NAME_RULE })
  if (password === undefined && publicKeys.length === 0) errors.push({ pointer: '/password', message: 'give a password, a public key, or both' })
  if (password !== undefined && password.length < MIN_SFTP_PASSWORD_LENGTH)
    errors.push({ pointer: '/password', message: `a password needs at least ${MIN_SFTP_PASSWORD_LENGTH} characters` })
  for (const [i, key] of publicKeys.entries())
    if (!isPublicKeyLine(key)) errors.push({ pointer: `/public_keys/${i}`, message: 'not an OpenSSH public key (ssh-ed25519 AAAA... comment)' })
  if (errors.length > 0) throw new SluiceError('SLUICE_BAD_REQUEST', `the SFTP user cannot be added: ${errors.map((e) => e.message).join('; ')}`, { errors })
  if (!users.add({ name, password, publicKeys }, opts.actor))
    throw new SluiceError('SLUICE_SFTP_USER_EXISTS', `there is already an SFTP user ${name}; remove it first to change how it logs in (its folder stays)`, {
      errors: [{ pointer: '/username', message: `${name} is taken` }],
    })
  const folder = join(filesLayout(dataDir).usersDir, name)
  for (const object of registry.objects()) mkdirSync(join(folder, object), { recursive: true })
  return sftpUserView(users.get(name) as SftpUser)
}
