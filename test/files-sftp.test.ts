import { existsSync, mkdirSync, readdirSync, readFileSync, renameSync, symlinkSync, writeFileSync } from 'node:fs'
import { join, relative } from 'node:path'
import ssh2 from 'ssh2'
import t from 'tap'
import { writeCsv } from '../fixtures/generate.ts'
import { freePort } from './helpers/cli.ts'
import { auditOf, run, type SftpLogin, sftpBatch, sluice } from './helpers/files.ts'
import { eventually, startTestSluice, type TestSluice, tempDir } from './helpers/sluice.ts'

interface JobStatus {
  job_id: string
  state: string
  source: string
  file_name: string | null
  object: string | null
  counts: { total: number | null; accepted: number; rejected: number; stored: number }
}

const FINAL = ['completed', 'completed_with_errors', 'failed', 'cancelled']

async function jobs(s: TestSluice): Promise<JobStatus[]> {
  return ((await (await s.request('GET', '/batch-status?limit=1000')).json()) as { jobs: JobStatus[] }).jobs
}

/** The finished job made from a file of this name. */
async function finishedJobOf(s: TestSluice, fileName: string, timeoutMs = 20_000): Promise<JobStatus> {
  return eventually(async () => (await jobs(s)).find((j) => j.file_name === fileName && FINAL.includes(j.state)), timeoutMs, 100)
}

/** Every file under `dir`, as paths relative to it. */
function filesUnder(dir: string): string[] {
  return readdirSync(dir, { recursive: true, withFileTypes: true })
    .filter((e) => !e.isDirectory())
    .map((e) => relative(dir, join(e.parentPath, e.name)))
}

t.test('flat files over SFTP and from a drop directory', async (t) => {
  const work = tempDir(t, 'sluice-files-')
  const dropDir = join(work, 'drop')
  mkdirSync(join(dropDir, 'account'), { recursive: true })
  // Already there when Sluice starts: taken all the same.
  await writeCsv(join(dropDir, 'account', 'accounts-before-start.csv'), 'account', 5, { seed: 11 })

  const sftpPort = await freePort()
  const s = await startTestSluice(t, {
    config: {
      roles: ['ingress', 'sink', 'batch', 'files'],
      batch: { pollIntervalMs: 50 },
      files: { sftpPort, dropDirs: [dropDir], stableMs: 300, loginFailureDelayMs: 400 },
    },
  })
  const env = { SLUICE_DATA_DIR: s.dataDir }
  const usersDir = join(s.dataDir, 'files', 'sftp')

  await run('ssh-keygen', ['-q', '-t', 'ed25519', '-N', '', '-f', join(work, 'alice_key')])
  const addAlice = await sluice(['sftp', 'add-user', 'alice', '--key', join(work, 'alice_key.pub')], env)
  t.equal(addAlice.code, 0, addAlice.stderr)
  t.match(addAlice.stdout, /added sftp user alice \(1 key\)/)
  const addBob = await sluice(['sftp', 'add-user', 'bob', '--password-stdin'], env, 'correct horse battery\n')
  t.equal(addBob.code, 0, addBob.stderr)
  t.match((await sluice(['sftp', 'list'], env)).stdout, /alice[\s\S]*bob\s+password/)
  t.equal((await sluice(['sftp', 'add-user', 'bob', '--password-stdin'], env, 'another password\n')).code, 1, 'a name is taken once')

  const alice: SftpLogin = { user: 'alice', key: join(work, 'alice_key') }
  const bob: SftpLogin = { user: 'bob', password: 'correct horse battery' }
  const transactionsCsv = join(work, 'transactions.csv')
  await writeCsv(transactionsCsv, 'transaction', 40, { seed: 21, accounts: 10 })

  t.test('a CSV put by key in the object folder becomes a job; its records are queryable; the file moves to processed/', async (t) => {
    const put = await sftpBatch(sftpPort, alice, ['ls', `put ${transactionsCsv} transaction/tx-a.csv`, 'ls transaction'], work)
    t.equal(put.code, 0, put.stderr)
    t.match(put.stdout, /account[\s\S]*transaction/, 'a new user finds a folder per object')
    const job = await finishedJobOf(s, 'tx-a.csv')
    t.match(job, { state: 'completed', source: 'sftp', object: 'transaction', counts: { total: 40, accepted: 40, stored: 40 } })
    const firstId = readFileSync(transactionsCsv, 'utf8').split('\r\n')[1].split(',')[0]
    const records = (await (await s.request('GET', `/records/transaction?transaction_id=${firstId}`)).json()) as {
      records: { source: string; job_id: string }[]
    }
    t.match(records.records, [{ source: 'sftp', job_id: job.job_id }], 'queryable, from its job')

    const back = join(work, 'tx-a.back.csv')
    const after = await eventually(async () => {
      const r = await sftpBatch(sftpPort, alice, ['ls processed/transaction', `get processed/transaction/tx-a.csv ${back}`], work)
      return r.code === 0 ? r : undefined
    })
    t.match(after.stdout, /tx-a\.csv/, 'the user sees the file in processed/')
    t.equal(readFileSync(back, 'utf8'), readFileSync(transactionsCsv, 'utf8'), 'and can get it back unchanged')
    t.match(auditOf(s.dataDir, 'sftp.login'), [{ target: 'alice' }], 'the login is audited')
    t.match(auditOf(s.dataDir, 'sftp.upload'), [{ actor: 'sftp:alice', target: '/transaction/tx-a.csv' }], 'and the upload')
  })

  t.test('the object from a name prefix; rejected rows give an error report beside the file', async (t) => {
    const csv = join(work, 'mixed.csv')
    const lines = readFileSync(transactionsCsv, 'utf8').split('\r\n')
    // Row 2 has an amount that is not a number; the rest are good (new ids, so not a duplicate either).
    const rows = lines.slice(1, 4).map((l, i) => l.replace(/^[^,]+/, `prefix-${i}`))
    rows[1] = rows[1].replace(/^([^,]*,[^,]*,)[^,]*/, '$1lots')
    writeFileSync(csv, [lines[0], ...rows].join('\r\n'))
    const put = await sftpBatch(sftpPort, alice, [`put ${csv} transaction_2026-11-23.csv`], work)
    t.equal(put.code, 0, put.stderr)
    const job = await finishedJobOf(s, 'transaction_2026-11-23.csv')
    t.match(job, { state: 'completed_with_errors', object: 'transaction', counts: { accepted: 2, rejected: 1 } })
    const report = join(usersDir, 'alice', 'processed', 'transaction_2026-11-23.csv.errors.csv')
    await eventually(async () => (existsSync(report) ? true : undefined))
    t.match(readFileSync(report, 'utf8'), /^row,record_key,pointer,message\n2,prefix-1,\/amount,/)
  })

  t.test('the same content dropped again is skipped, unless its name ends in .force', async (t) => {
    const put = await sftpBatch(sftpPort, alice, [`put ${transactionsCsv} transaction/tx-again.csv`], work)
    t.equal(put.code, 0, put.stderr)
    const skipped = join(usersDir, 'alice', 'failed', 'transaction', 'tx-again.csv')
    await eventually(async () => (existsSync(`${skipped}.errors.csv`) ? true : undefined), 10_000)
    t.ok(existsSync(skipped), 'the duplicate is in failed/')
    t.match(readFileSync(`${skipped}.errors.csv`, 'utf8'), /already ingested from transaction\/tx-a\.csv \(job job_/)
    t.notOk(
      (await jobs(s)).some((j) => j.file_name === 'tx-again.csv'),
      'no job was made',
    )
    await sftpBatch(sftpPort, alice, [`put ${transactionsCsv} transaction/tx-again.csv.force`], work)
    t.match(await finishedJobOf(s, 'tx-again.csv'), { state: 'completed', counts: { accepted: 40 } }, 'forced: ingested again')
  })

  t.test('a partial upload is not ingested until complete: closed by the client, or renamed from a temporary name', async (t) => {
    const content = Buffer.from(readFileSync(transactionsCsv, 'utf8').replace(/\r\n([^,]+)/g, '\r\nslow-$1'))
    const client = new ssh2.Client()
    await new Promise<void>((resolve, reject) =>
      client
        .on('ready', resolve)
        .on('error', reject)
        .connect({ host: '127.0.0.1', port: sftpPort, username: 'alice', privateKey: readFileSync(alice.key) }),
    )
    t.teardown(() => client.end())
    const sftp = await new Promise<ssh2.SFTPWrapper>((resolve, reject) => client.sftp((err, w) => (err ? reject(err) : resolve(w))))
    const handle = await new Promise<Buffer>((resolve, reject) => sftp.open('/transaction/slow.csv', 'w', (err, h) => (err ? reject(err) : resolve(h))))
    const write = (from: number, to: number) =>
      new Promise<void>((resolve, reject) => sftp.write(handle, content, from, to - from, from, (err) => (err ? reject(err) : resolve())))
    const half = Math.floor(content.length / 2)
    await write(0, half)
    await new Promise((r) => setTimeout(r, 1500)) // five times files.stableMs
    t.notOk(
      (await jobs(s)).some((j) => j.file_name === 'slow.csv'),
      'half a file: no job',
    )
    t.notOk(existsSync(join(usersDir, 'alice', 'transaction', 'slow.csv')), 'nor a file under its name')
    await write(half, content.length)
    await new Promise<void>((resolve, reject) => sftp.close(handle, (err) => (err ? reject(err) : resolve())))
    const job = await finishedJobOf(s, 'slow.csv')
    t.match(job, { state: 'completed', counts: { total: 40, accepted: 40 } }, 'closed: the whole file is one job')

    // Clients such as WinSCP write to a temporary name of their own, then rename.
    const renamed = join(work, 'renamed.csv')
    writeFileSync(renamed, readFileSync(transactionsCsv, 'utf8').replace(/\r\n([^,]+)/g, '\r\nrenamed-$1'))
    const put = await sftpBatch(
      sftpPort,
      alice,
      [`put ${renamed} transaction/renamed.csv.filepart`, 'rename transaction/renamed.csv.filepart transaction/renamed.csv'],
      work,
    )
    t.equal(put.code, 0, put.stderr)
    t.match(await finishedJobOf(s, 'renamed.csv'), { state: 'completed', counts: { accepted: 40 } }, 'taken under its final name')
    t.notOk(
      (await jobs(s)).some((j) => j.file_name?.endsWith('.filepart')),
      'never under the temporary one',
    )
  })

  t.test('no path, link or name leaves the jail, and other users are invisible', async (t) => {
    const outside = join(work, 'outside')
    mkdirSync(outside)
    // Links an administrator (or an attacker with a shell) might leave in a user's folder.
    symlinkSync(outside, join(usersDir, 'alice', 'link-to-outside'))
    symlinkSync('/etc/passwd', join(usersDir, 'alice', 'passwd'))
    const note = join(work, 'note.txt')
    writeFileSync(note, 'escape attempt\n')
    const bobPut = await sftpBatch(sftpPort, bob, [`put ${note} bob-secret.txt`], work)
    t.equal(bobPut.code, 0, bobPut.stderr)

    const attempt = await sftpBatch(
      sftpPort,
      alice,
      [
        `-put ${note} ../../../escaped.txt`,
        `-put ${note} /../../escaped-abs.txt`,
        `-put ${note} link-to-outside/through-link.txt`,
        `-get passwd ${join(work, 'passwd-copy')}`,
        `-get ../../state.db ${join(work, 'state-copy')}`,
        `-rename passwd stolen`,
        '-ls link-to-outside',
        '-ls ../bob',
        '-ls /../../',
        `-symlink /etc/shadow shadow-link`,
        // What a user may do with its own files (hidden names, so the watcher leaves them be).
        'mkdir scratch',
        `put ${note} scratch/.draft`,
        'rename scratch/.draft scratch/.final',
        'rm scratch/.final',
        'rmdir scratch',
        'cd ../../..',
        'pwd',
        'ls -a',
      ],
      work,
    )
    t.equal(attempt.code, 0, 'the batch ran to its end', { stderr: attempt.stderr })
    t.same(readdirSync(outside), [], 'nothing written through the link')
    t.notOk(existsSync(join(work, 'passwd-copy')), 'a link to /etc/passwd is not followed')
    t.notOk(existsSync(join(work, 'state-copy')), 'the data dir is out of reach')
    t.match(attempt.stderr, /link-to-outside.*[Pp]ermission denied/)
    t.match(attempt.stdout, /Remote working directory: \/\n/, 'cd .. stops at the jail root')
    t.notMatch(attempt.stdout, /bob-secret/, "bob's files are not listed")
    t.notMatch(attempt.stdout, /analytics\.duckdb|batches/, 'nor anything above the jail')
    const escapedAnywhere = filesUnder(s.dataDir).filter((f) => /escaped/.test(f))
    t.ok(
      escapedAnywhere.every((f) => f.startsWith(join('files', 'sftp', 'alice'))),
      `"../" uploads landed inside alice's folder: ${escapedAnywhere.join(', ')}`,
    )
    t.notOk(existsSync(join(usersDir, 'alice', 'shadow-link')), 'no link was made')
    t.notOk(existsSync(join(usersDir, 'alice', 'stolen')), 'nor a link renamed')
    t.notOk(existsSync(join(usersDir, 'alice', 'scratch')), 'mkdir, put, rename, rm and rmdir of its own files work')
    t.notOk(existsSync(join(work, 'escaped.txt')) || existsSync('/escaped.txt'), 'nothing outside at all')
  })

  t.test('a wrong password fails, slowly, and is audited; the right one works', async (t) => {
    const wrong = await sftpBatch(sftpPort, { user: 'bob', password: 'wrong horse battery' }, ['ls'], work)
    t.not(wrong.code, 0, 'refused')
    t.ok(wrong.ms >= 400, `answered after the failure delay (${wrong.ms} ms)`)
    const unknown = await sftpBatch(sftpPort, { user: 'mallory', password: 'anything at all' }, ['ls'], work)
    t.not(unknown.code, 0, 'an unknown user is refused the same way')
    t.same(
      auditOf(s.dataDir, 'sftp.login_failed').map((a) => [a.target, JSON.parse(a.detail_json).reason]),
      [
        ['bob', 'wrong password'],
        ['mallory', 'no such user'],
      ],
    )
    const accountsCsv = join(work, 'accounts-bob.csv')
    await writeCsv(accountsCsv, 'account', 7, { seed: 31 })
    const ok = await sftpBatch(sftpPort, bob, [`put ${accountsCsv} account/accounts-bob.csv`, 'ls failed'], work)
    t.equal(ok.code, 0, ok.stderr)
    t.match(ok.stdout, /bob-secret\.txt/, 'bob sees his own files (his note was refused: not a data file)')
    t.match(await finishedJobOf(s, 'accounts-bob.csv'), { state: 'completed', source: 'sftp', object: 'account', counts: { accepted: 7 } })
  })

  t.test('a drop directory: files already there at start, temporary names only once renamed', async (t) => {
    const before = await finishedJobOf(s, 'accounts-before-start.csv')
    t.match(before, { state: 'completed', source: 'dropdir', object: 'account', counts: { accepted: 5 } })
    await eventually(async () => (existsSync(join(dropDir, 'processed', 'account', 'accounts-before-start.csv')) ? true : undefined))

    const part = join(dropDir, 'transaction-late.csv.part')
    writeFileSync(part, readFileSync(transactionsCsv, 'utf8').replace(/\r\n([^,]+)/g, '\r\nlate-$1'))
    await new Promise((r) => setTimeout(r, 1000))
    t.notOk(
      (await jobs(s)).some((j) => j.file_name?.startsWith('transaction-late')),
      'a .part file is not taken',
    )
    renameSync(part, join(dropDir, 'transaction-late.csv'))
    t.match(await finishedJobOf(s, 'transaction-late.csv'), { state: 'completed', source: 'dropdir', object: 'transaction', counts: { accepted: 40 } })
    writeFileSync(join(dropDir, 'notes.txt'), 'not data')
    await eventually(async () => (existsSync(join(dropDir, 'failed', 'notes.txt.errors.csv')) ? true : undefined))
    t.match(readFileSync(join(dropDir, 'failed', 'notes.txt.errors.csv'), 'utf8'), /not a format Sluice reads/)
  })
})
