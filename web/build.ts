import { randomBytes } from 'node:crypto'
import { readdirSync, readFileSync, renameSync, rmSync, writeFileSync } from 'node:fs'
import { basename, join } from 'node:path'
import { fileURLToPath } from 'node:url'
import * as esbuild from 'esbuild'

const WEB_DIR = fileURLToPath(new URL('.', import.meta.url))
const DIST_DIR = join(WEB_DIR, 'dist')

/**
 * Bundles web/src into web/dist: `index.html` and content-hashed assets (`assets/app-<hash>.js|css`), so the
 * server can let browsers cache assets forever and only revalidate the page. Assets of earlier builds are
 * removed. Everything the page loads comes from this bundle: no CDN, no outside fonts.
 */
export async function buildDashboard(outDir = DIST_DIR): Promise<void> {
  const assetsDir = join(outDir, 'assets')
  const result = await esbuild.build({
    entryPoints: { app: join(WEB_DIR, 'src/main.ts') },
    bundle: true,
    format: 'esm',
    target: 'es2022',
    minify: true,
    sourcemap: 'linked',
    legalComments: 'none',
    outdir: assetsDir,
    entryNames: '[name]-[hash]',
    metafile: true,
    logLevel: 'warning',
  })
  const outputs = Object.keys(result.metafile.outputs).map((file) => basename(file))
  const script = outputs.find((f) => f.endsWith('.js'))
  const styles = outputs.find((f) => f.endsWith('.css'))
  if (!script || !styles) throw new Error(`the build made no script or no stylesheet: ${outputs.join(', ')}`)
  const page = readFileSync(join(WEB_DIR, 'src/index.html'), 'utf8').replace('%APP_JS%', `/assets/${script}`).replace('%APP_CSS%', `/assets/${styles}`)
  // esbuild made outDir (assets/ is in it). Written beside, then renamed: a server never reads a half-written page.
  const partial = join(outDir, `.index-${randomBytes(4).toString('hex')}.html`)
  writeFileSync(partial, page)
  renameSync(partial, join(outDir, 'index.html'))
  const current = new Set(outputs)
  for (const file of readdirSync(assetsDir)) if (!current.has(file)) rmSync(join(assetsDir, file), { force: true })
}

if (process.argv[1] === fileURLToPath(import.meta.url)) await buildDashboard()
