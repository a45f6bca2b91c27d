import { type Static, Type } from '@sinclair/typebox'
import type { FastifyInstance } from 'fastify'
import { SluiceError } from '../errors.ts'
import { addSftpUser, MIN_SFTP_PASSWORD_LENGTH, SFTP_USER_NAME_RULE, sftpUserView } from '../files/index.ts'
import type { IngressDeps } from './app.ts'
import { problem } from './route-schemas.ts'

const SftpUserSchema = Type.Object({
  username: Type.String(),
  password: Type.Boolean({ description: 'whether it may log in by password (the password itself is kept only as a scrypt hash, never shown)' }),
  public_keys: Type.Array(Type.String(), { description: 'its authorized OpenSSH public keys' }),
  created_at: Type.String(),
})
// The name's and password's rules are checked by addSftpUser, which names them in words a person can act on.
const CreateSftpUserBody = Type.Object(
  {
    username: Type.String({ maxLength: 64, description: `${SFTP_USER_NAME_RULE}; also the name of its folder` }),
    password: Type.Optional(Type.String({ maxLength: 1024, description: `at least ${MIN_SFTP_PASSWORD_LENGTH} characters` })),
    public_keys: Type.Array(Type.String({ maxLength: 16_384 }), {
      default: [],
      maxItems: 100,
      description: 'OpenSSH public keys, one per item (`ssh-ed25519 AAAA... comment`); a password, keys, or both',
    }),
  },
  { additionalProperties: false },
)
const UsernameParams = Type.Object({ username: Type.String({ maxLength: 64 }) })

/**
 * SFTP users (admin): the same as `sluice sftp add-user|list|remove`, audited the same way with the API key as
 * the actor. Users live in SQLite whether or not this process runs the `files` role; the SFTP server reads them
 * at each login, so a user added here logs in at once and a removed one can no longer log in.
 */
export function registerSftpUserRoutes(app: FastifyInstance, deps: IngressDeps): void {
  const { sftpUsers, registry, config } = deps

  app.get(
    '/sftp-users',
    {
      config: { scope: 'admin' },
      schema: {
        tags: ['files'],
        summary: 'Every SFTP user and how it logs in (never a password or its hash)',
        response: { 200: Type.Object({ users: Type.Array(SftpUserSchema) }) },
      },
    },
    async () => ({ users: sftpUsers.list().map(sftpUserView) }),
  )

  app.post<{ Body: Static<typeof CreateSftpUserBody> }>(
    '/sftp-users',
    {
      config: { scope: 'admin' },
      schema: {
        tags: ['files'],
        summary: 'Add an SFTP user who logs in by password, public keys or both, jailed in its own folder',
        body: CreateSftpUserBody,
        response: { 201: SftpUserSchema, 400: problem, 409: problem },
      },
    },
    async (request, reply) => {
      const { username, password, public_keys } = request.body
      const user = addSftpUser(sftpUsers, registry, config.dataDir, {
        name: username,
        password,
        publicKeys: public_keys.map((k) => k.trim()),
        actor: request.apiKey?.id ?? 'unknown',
      })
      return reply.code(201).send(user)
    },
  )

  app.delete<{ Params: Static<typeof UsernameParams> }>(
    '/sftp-users/:username',
    {
      config: { scope: 'admin' },
      schema: {
        tags: ['files'],
        summary: 'Remove an SFTP user: it can no longer log in; its folder and files stay',
        params: UsernameParams,
        response: { 200: SftpUserSchema, 404: problem },
      },
    },
    async (request) => {
      const { username } = request.params
      const user = sftpUsers.get(username)
      if (!user || !sftpUsers.remove(username, request.apiKey?.id ?? 'unknown'))
        throw new SluiceError('SLUICE_SFTP_USER_NOT_FOUND', `there is no SFTP user ${username}`)
      return sftpUserView(user)
    },
  )
}
