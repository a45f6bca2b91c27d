import { existsSync, readFileSync } from 'node:fs'
import { join } from 'node:path'
import t from 'tap'
import { freePort } from './helpers/cli.ts'
import { auditOf, run, sftpBatch } from './helpers/files.ts'
import { startTestSluice, type TestSluice, tempDir } from './helpers/sluice.ts'

interface SftpUserView {
  username: string
  password: boolean
  public_keys: string[]
  created_at: string
}

const PASSWORD = 'correct horse battery'

/** The id of the key the test's requests use (the admin key), as the audit log names it. */
async function adminKeyId(s: TestSluice): Promise<string> {
  const { keys } = (await (await s.request('GET', '/keys')).json()) as { keys: { id: string; name: string }[] }
  return keys.find((k) => k.name === 'admin')?.id as string
}

t.test('SFTP users over HTTP, without the files role running', async (t) => {
  const s = await startTestSluice(t)
  const work = tempDir(t, 'sluice-sftp-users-')
  await run('ssh-keygen', ['-q', '-t', 'ed25519', '-N', '', '-C', 'carol@laptop', '-f', join(work, 'carol_key')])
  const carolKey = readFileSync(join(work, 'carol_key.pub'), 'utf8').trim()

  t.test('a read key can neither list nor create SFTP users', async (t) => {
    const { secret } = (await (await s.request('POST', '/keys', { name: 'analyst', scopes: ['read'] })).json()) as { secret: string }
    const asReader = { authorization: `Bearer ${secret}` }
    const list = await s.request('GET', '/sftp-users', undefined, asReader)
    t.equal(list.status, 403)
    const create = await s.request('POST', '/sftp-users', { username: 'mallory', password: PASSWORD }, asReader)
    t.equal(create.status, 403)
    t.match(await create.json(), { code: 'SLUICE_FORBIDDEN' })
    const remove = await s.request('DELETE', '/sftp-users/mallory', undefined, asReader)
    t.equal(remove.status, 403)
    t.same(((await (await s.request('GET', '/sftp-users')).json()) as { users: unknown[] }).users, [], 'nothing was added')
  })

  t.test('an admin adds users by password or key; the list shows how each logs in, never a password hash; both are audited', async (t) => {
    const bob = await s.request('POST', '/sftp-users', { username: 'bob', password: PASSWORD })
    t.equal(bob.status, 201)
    const bobBody = await bob.text()
    t.match(JSON.parse(bobBody), { username: 'bob', password: true, public_keys: [], created_at: String })
    const carol = await s.request('POST', '/sftp-users', { username: 'carol', public_keys: [carolKey] })
    t.equal(carol.status, 201)
    t.match(await carol.json(), { username: 'carol', password: false, public_keys: [carolKey] })
    const listBody = await (await s.request('GET', '/sftp-users')).text()
    const { users } = JSON.parse(listBody) as { users: SftpUserView[] }
    t.same(
      users.map((u) => [u.username, u.password, u.public_keys.length]),
      [
        ['bob', true, 0],
        ['carol', false, 1],
      ],
    )
    for (const body of [bobBody, listBody]) {
      t.notMatch(body, /scrypt|hash/, 'no password hash in the answer')
      t.notMatch(body, PASSWORD, 'nor the password')
    }
    t.ok(existsSync(join(s.dataDir, 'files', 'sftp', 'bob', 'transaction')), 'a new user gets a folder per object')
    const actor = await adminKeyId(s)
    t.match(auditOf(s.dataDir, 'sftp.user_add'), [
      { actor, target: 'bob', detail_json: /"password":true/ },
      { actor, target: 'carol', detail_json: /"keys":1/ },
    ])
  })

  t.test('bad input is a 400 naming the field; a taken name is a 409', async (t) => {
    const cases: [string, unknown, string][] = [
      ['no username', { password: PASSWORD }, '/body/username'],
      ['a name that is no folder name', { username: 'Bad Name', password: PASSWORD }, '/username'],
      ['a short password', { username: 'dave', password: 'short' }, '/password'],
      ['neither a password nor a key', { username: 'dave' }, '/password'],
      ['a key that is no public key', { username: 'dave', public_keys: [carolKey, 'ssh-ed25519 not-a-key'] }, '/public_keys/1'],
    ]
    for (const [what, body, pointer] of cases) {
      const res = await s.request('POST', '/sftp-users', body)
      t.equal(res.status, 400, what)
      t.match(await res.json(), { code: 'SLUICE_BAD_REQUEST', errors: [{ pointer, message: String }] }, `${what}: names ${pointer}`)
    }
    const taken = await s.request('POST', '/sftp-users', { username: 'bob', password: 'another password' })
    t.equal(taken.status, 409)
    t.match(await taken.json(), { code: 'SLUICE_SFTP_USER_EXISTS', detail: /bob/, errors: [{ pointer: '/username' }] })
    t.same(
      ((await (await s.request('GET', '/sftp-users')).json()) as { users: SftpUserView[] }).users.map((u) => u.username),
      ['bob', 'carol'],
      'nothing was added',
    )
  })

  t.test('an admin removes a user (audited; the folder stays); removing an unknown one is a 404', async (t) => {
    const removed = await s.request('DELETE', '/sftp-users/carol')
    t.equal(removed.status, 200)
    t.match(await removed.json(), { username: 'carol', password: false })
    t.same(
      ((await (await s.request('GET', '/sftp-users')).json()) as { users: SftpUserView[] }).users.map((u) => u.username),
      ['bob'],
    )
    t.match(auditOf(s.dataDir, 'sftp.user_remove'), [{ actor: await adminKeyId(s), target: 'carol' }])
    t.ok(existsSync(join(s.dataDir, 'files', 'sftp', 'carol')), 'the folder and its files stay')
    const again = await s.request('DELETE', '/sftp-users/carol')
    t.equal(again.status, 404)
    t.match(await again.json(), { code: 'SLUICE_SFTP_USER_NOT_FOUND', detail: /carol/ })
  })

  t.test('the routes are in the API document', async (t) => {
    const { paths } = (await (await s.request('GET', '/openapi.json')).json()) as { paths: Record<string, Record<string, unknown>> }
    t.same(Object.keys(paths['/sftp-users'] ?? {}).sort(), ['get', 'post'])
    t.same(Object.keys(paths['/sftp-users/{username}'] ?? {}), ['delete'])
  })
})

t.test('the running SFTP server takes a user added over HTTP at once, and refuses it once removed', async (t) => {
  const sftpPort = await freePort()
  const s = await startTestSluice(t, { config: { roles: ['ingress', 'sink', 'files'], files: { sftpPort, loginFailureDelayMs: 50 } } })
  const work = tempDir(t, 'sluice-sftp-live-')
  const erin = { user: 'erin', password: PASSWORD }
  t.equal((await s.request('POST', '/sftp-users', { username: 'erin', password: PASSWORD })).status, 201)
  const listed = await sftpBatch(sftpPort, erin, ['ls'], work)
  t.equal(listed.code, 0, listed.stderr)
  t.match(listed.stdout, /account[\s\S]*transaction/, 'logged in, in its own folder')
  t.equal((await s.request('DELETE', '/sftp-users/erin')).status, 200)
  const refused = await sftpBatch(sftpPort, erin, ['ls'], work)
  t.not(refused.code, 0, 'a removed user can no longer log in')
  t.match(auditOf(s.dataDir, 'sftp.login_failed'), [{ target: 'erin', detail_json: /no such user/ }])
})
