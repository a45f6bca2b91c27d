/** A goal a figure is held to: `value >= 8000`, `value < 1000`, `value <= 15`. */
export interface Target {
  op: '>=' | '<' | '<='
  value: number
}

/** One measured number as the summary table shows it. */
export interface Figure {
  label: string
  /** null when the measurement could not be made; a figure with a target then counts as missed. */
  value: number | null
  unit: string
  /** Decimal places shown. Default 0. */
  decimals?: number
  target?: Target
}

/** What one bench module hands back to bench/run.ts. */
export interface BenchResult {
  /** Also the name of its results file, bench/results/<name>.json. */
  name: string
  figures: Figure[]
  /** Everything measured, in more detail than the table, for the results file. */
  details: Record<string, unknown>
  /** Errors Sluice answered or measurements it did not let finish; any of them makes the run fail. */
  problems: string[]
}

export function meetsTarget(value: number | null, target: Target): boolean {
  if (value === null) return false
  if (target.op === '>=') return value >= target.value
  return target.op === '<' ? value < target.value : value <= target.value
}

function formatNumber(value: number, decimals = 0): string {
  return value.toLocaleString('en-US', { minimumFractionDigits: decimals, maximumFractionDigits: decimals })
}

function withUnit(text: string, unit: string): string {
  return unit ? `${text} ${unit}` : text
}

/** The figures of one bench as an aligned text table, a pass/miss verdict beside each target. */
export function formatFigures(result: BenchResult): string {
  const rows = result.figures.map((f) => [
    f.label,
    f.value === null ? 'not measured' : withUnit(formatNumber(f.value, f.decimals), f.unit),
    f.target ? withUnit(`${f.target.op} ${formatNumber(f.target.value, f.decimals)}`, f.unit) : '',
    f.target ? (meetsTarget(f.value, f.target) ? 'pass' : 'MISS') : '',
  ])
  const table = [['figure', 'measured', 'target', ''], ...rows]
  const widths = table[0].map((_, column) => Math.max(...table.map((row) => row[column].length)))
  const line = (row: string[]) =>
    row
      .map((cell, column) => (column === 0 ? cell.padEnd(widths[column]) : cell.padStart(widths[column])))
      .join('   ')
      .trimEnd()
  return [line(table[0]), ...rows.map(line)].join('\n')
}
