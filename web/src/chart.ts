import { html } from 'htm/preact'
import { useEffect, useRef } from 'preact/hooks'
import uPlot from 'uplot'

export interface ChartSeries {
  label: string
  color: string
}

/** Colours for objects, in the order they are first seen; the same object keeps its colour on every chart. */
const PALETTE = ['#2563eb', '#16a34a', '#d97706', '#9333ea', '#0891b2', '#db2777', '#65a30d', '#475569']
const assigned = new Map<string, string>()
export function colorOf(name: string): string {
  let color = assigned.get(name)
  if (!color) assigned.set(name, (color = PALETTE[assigned.size % PALETTE.length]))
  return color
}

const compact = new Intl.NumberFormat(undefined, { notation: 'compact', maximumFractionDigits: 1 })

/**
 * A time-series chart (uPlot, canvas: cheap to redraw every second). `data` is uPlot's aligned data: epoch
 * seconds, then one array per series. The plot is rebuilt only when the series change, else just fed new data.
 */
export function TimeChart(props: {
  series: ChartSeries[]
  data: uPlot.AlignedData
  /** The time axis spans at least this many seconds up to the newest point, so a young chart is not stretched thin. */
  minSeconds: number
  height?: number
  /** Bars of this many seconds each (one per minute: 60); lines when left out. */
  barSeconds?: number
  unit?: string
  testid?: string
}) {
  const box = useRef<HTMLDivElement>(null)
  const plot = useRef<uPlot | undefined>(undefined)
  const seriesKey = props.series.map((s) => `${s.label}:${s.color}`).join()

  useEffect(() => {
    const el = box.current
    if (!el) return
    const opts: uPlot.Options = {
      width: el.clientWidth || 600,
      height: props.height ?? 220,
      legend: { show: props.series.length > 0 },
      cursor: { drag: { x: false, y: false } },
      scales: {
        // Up to the newest point (uPlot would widen a single point to a whole day), plus the last bar's width.
        x: {
          time: true,
          range: (u, min) => {
            const times = u.data[0]
            const end = (times[times.length - 1] ?? Date.now() / 1000) + (props.barSeconds ?? 0)
            const start = end - props.minSeconds
            return [min === null ? start : Math.min(min, start), end]
          },
        },
        y: { range: (_u, _min, max) => [0, Math.max(1, max * 1.1)] },
      },
      axes: [
        { stroke: '#667085', grid: { stroke: '#eef0f3' }, ticks: { stroke: '#e3e6ea' } },
        {
          stroke: '#667085',
          grid: { stroke: '#eef0f3' },
          ticks: { stroke: '#e3e6ea' },
          size: 48,
          values: (_u, values) => values.map((v) => compact.format(v)),
        },
      ],
      series: [
        {},
        ...props.series.map(
          (s): uPlot.Series => ({
            label: s.label,
            stroke: s.color,
            fill: `${s.color}22`,
            width: 2,
            points: { show: false },
            value: (_u, v) => (v === null ? '—' : `${compact.format(v)}${props.unit ?? ''}`),
            ...(props.barSeconds && { paths: uPlot.paths.bars?.({ size: [0.7, 40], align: 1 }), fill: `${s.color}bb` }),
          }),
        ),
      ],
    }
    plot.current = new uPlot(opts, props.data, el)
    const resize = new ResizeObserver(() => plot.current?.setSize({ width: el.clientWidth, height: props.height ?? 220 }))
    resize.observe(el)
    return () => {
      resize.disconnect()
      plot.current?.destroy()
      plot.current = undefined
    }
  }, [seriesKey, props.barSeconds, props.height, props.minSeconds])

  useEffect(() => {
    plot.current?.setData(props.data)
  }, [props.data])

  return html`<div class="chart" ref=${box} data-testid=${props.testid}></div>`
}
