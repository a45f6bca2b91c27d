// `make bench`: runs each bench module in turn, then prints each one's figures against their targets and
// writes bench/results/<name>.json. A missed target is a finding, not a failure: the exit code is non-zero
// only when a bench could not run or Sluice answered errors. `bench/run.ts batch` runs only the benches named.
import { mkdirSync, writeFileSync } from 'node:fs'
import { availableParallelism } from 'node:os'
import { runBatchBench } from './batch.ts'
import { runIngestBench } from './ingest.ts'
import { type BenchResult, formatFigures, meetsTarget } from './report.ts'
import { runRulesBench } from './rules.ts'
import { stopAllServerProcesses } from './server-process.ts'

const BENCHES: ReadonlyArray<{ name: string; run: () => Promise<BenchResult> }> = [
  { name: 'ingest', run: runIngestBench },
  { name: 'batch', run: runBatchBench },
  { name: 'rules', run: runRulesBench },
]
const RESULTS_DIR = new URL('results/', import.meta.url)
const MACHINE = { cpus: availableParallelism(), node: process.version, platform: `${process.platform}-${process.arch}` }

for (const signal of ['SIGINT', 'SIGTERM'] as const) {
  process.once(signal, async () => {
    await stopAllServerProcesses()
    process.exit(128 + (signal === 'SIGINT' ? 2 : 15))
  })
}

function writeResults(result: BenchResult): string {
  mkdirSync(RESULTS_DIR, { recursive: true })
  const file = new URL(`${result.name}.json`, RESULTS_DIR)
  const figures = result.figures.map((f) => ({ ...f, ...(f.target && { pass: meetsTarget(f.value, f.target) }) }))
  const json = { name: result.name, measured_at: new Date().toISOString(), machine: MACHINE, figures, details: result.details, problems: result.problems }
  writeFileSync(file, `${JSON.stringify(json, null, 2)}\n`)
  return file.pathname
}

const wanted = process.argv.slice(2)
const unknown = wanted.filter((name) => !BENCHES.some((bench) => bench.name === name))
if (unknown.length > 0) {
  console.error(`no bench named ${unknown.join(', ')}; there are: ${BENCHES.map((bench) => bench.name).join(', ')}`)
  process.exit(2)
}
const selected = wanted.length === 0 ? BENCHES : BENCHES.filter((bench) => wanted.includes(bench.name))

const results: BenchResult[] = []
let failed = false
try {
  for (const bench of selected) results.push(await bench.run())
} catch (err) {
  console.error(err)
  failed = true
} finally {
  await stopAllServerProcesses()
}

console.log(`\nSluice benchmarks on ${MACHINE.cpus} CPUs, Node ${MACHINE.node} (the load generator shares them)`)
for (const result of results) {
  const file = writeResults(result)
  console.log(`\n${result.name} (${file})\n${formatFigures(result)}`)
  for (const problem of result.problems) console.log(`PROBLEM: ${problem}`)
  failed ||= result.problems.length > 0
}
process.exitCode = failed ? 1 : 0
