import type { BenchContext } from './context.js'

/**
 * Runs `subject` and `baseline` `repeats` times each (`ctx.repeats` unless given), alternating
 * which goes first, so a phase of the machine hits both alike. With `warmUp` (the default),
 * outside a quick run, one unmeasured call of each comes first.
 *
 * @example
 * const { subject, baseline } = await alternate(ctx, 'ids', () => viaGenerator(), () => raw())
 */
export async function alternate<S, B>(
  ctx: BenchContext,
  label: string,
  subject: () => Promise<S>,
  baseline: () => Promise<B>,
  options: { repeats?: number; warmUp?: boolean } = {},
): Promise<{ subject: S[]; baseline: B[] }> {
  const repeats = options.repeats ?? ctx.repeats
  const out = { subject: [] as S[], baseline: [] as B[] }
  if ((options.warmUp ?? true) && !ctx.quick) {
    await subject()
    await baseline()
  }
  for (let i = 0; i < repeats; i++) {
    ctx.progress(`${label}: repeat ${i + 1}/${repeats}`)
    if (i % 2 === 0) {
      out.subject.push(await subject())
      out.baseline.push(await baseline())
    } else {
      out.baseline.push(await baseline())
      out.subject.push(await subject())
    }
  }
  return out
}
