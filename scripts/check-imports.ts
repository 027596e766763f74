/**
 * Enforces the layering of ARCHITECTURE §1: `storage/` knows nothing of persisters or the API,
 * `persisters/` knows nothing of the API. Prints every violation and exits non-zero on any.
 *
 * @example
 * node --import tsx scripts/check-imports.ts
 */
import { readdir, readFile } from 'node:fs/promises'
import { dirname, join, relative, resolve } from 'node:path'
import { fileURLToPath } from 'node:url'

const root = resolve(dirname(fileURLToPath(import.meta.url)), '..')

/** Layer → layers it must not import. */
const forbidden: Record<string, readonly string[]> = {
  storage: ['persisters', 'api'],
  persisters: ['api'],
}

async function* sourceFiles(dir: string): AsyncGenerator<string> {
  for (const entry of await readdir(dir, { withFileTypes: true })) {
    const path = join(dir, entry.name)
    if (entry.isDirectory()) yield* sourceFiles(path)
    else if (entry.name.endsWith('.ts')) yield path
  }
}

const importPattern = /(?:import|export)\s[^'"]*?from\s+['"]([^'"]+)['"]|import\(\s*['"]([^'"]+)['"]\s*\)/g

const violations: string[] = []
for (const [layer, banned] of Object.entries(forbidden)) {
  for await (const file of sourceFiles(join(root, layer))) {
    const text = await readFile(file, 'utf8')
    for (const match of text.matchAll(importPattern)) {
      const specifier = match[1] ?? match[2] ?? ''
      if (!specifier.startsWith('.')) continue
      const target = relative(root, resolve(dirname(file), specifier)).split('/')[0] ?? ''
      if (banned.includes(target)) violations.push(`${relative(root, file)} imports ${specifier} (${layer}/ must not depend on ${target}/)`)
    }
  }
}

if (violations.length > 0) {
  for (const line of violations) console.error(line)
  process.exit(1)
}
console.log(`import layering ok (${Object.keys(forbidden).join(', ')})`)
