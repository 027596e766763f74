import type { Kysely } from 'kysely'
import { allocateAccountDataStreamId } from './account-data.js'
import { defaultPushRules, type PushAction, type PushCondition, type PushRule, type PushRuleKind, type PushRuleSet } from './default-push-rules.js'
import type { Database } from './schema.js'

export { defaultPushRules, pushRuleKinds } from './default-push-rules.js'
export type { PushAction, PushCondition, PushRule, PushRuleKind, PushRuleSet } from './default-push-rules.js'

/**
 * Each user's push rule set, stored whole in `push_rules.rules` (the content of the user's
 * `m.push_rules` account data): created from the spec defaults on first read, rewritten on every
 * change. Writes go through the account data stream (storage/account-data.ts), so /sync sees a
 * change as `m.push_rules` account data.
 *
 * Order within a kind is priority order. User rules sit in front of the server-default rules of
 * their kind, except that `.m.rule.master` always stays first among override rules (spec:
 * "server-default rules have lower priority than user-defined rules, except .m.rule.master").
 * A stored set keeps the defaults it was created with; later spec additions reach only new users.
 */

/** One change a client asks for (PUT/DELETE /pushrules/global/{kind}/{ruleId}[/enabled|/actions]). */
export type PushRuleEdit =
  | {
      readonly op: 'put'
      readonly kind: PushRuleKind
      readonly ruleId: string
      readonly actions: PushAction[]
      readonly conditions?: PushCondition[]
      readonly pattern?: string
      /** Insert just before (higher priority than) this user rule of the same kind. */
      readonly before?: string
      /** Insert just after this user rule of the same kind. */
      readonly after?: string
    }
  | { readonly op: 'delete'; readonly kind: PushRuleKind; readonly ruleId: string }
  | { readonly op: 'enabled'; readonly kind: PushRuleKind; readonly ruleId: string; readonly enabled: boolean }
  | { readonly op: 'actions'; readonly kind: PushRuleKind; readonly ruleId: string; readonly actions: PushAction[] }

/** `not_found`: a rule (or `before`/`after` anchor) does not exist; `invalid`: the edit is not allowed. */
export type PushRuleEditResult =
  | { readonly ok: true; readonly rules: PushRuleSet }
  | { readonly ok: false; readonly reason: 'not_found' | 'invalid'; readonly message: string }

function fail(reason: 'not_found' | 'invalid', message: string): PushRuleEditResult {
  return { ok: false, reason, message }
}

function withKind(set: PushRuleSet, kind: PushRuleKind, rules: PushRule[]): PushRuleSet {
  return { global: { ...set.global, [kind]: rules } }
}

/** Index where a new highest-priority user rule of `kind` goes (after `.m.rule.master`). */
function frontOfUserRules(rules: readonly PushRule[], kind: PushRuleKind): number {
  if (kind !== 'override') return 0
  return rules[0]?.rule_id === '.m.rule.master' ? 1 : 0
}

/**
 * Applies one edit to a rule set, without touching the database.
 *
 * @example
 * const result = applyPushRuleEdit(defaultPushRules(userId), { op: 'enabled', kind: 'override', ruleId: '.m.rule.master', enabled: true })
 * if (result.ok) result.rules.global.override[0].enabled // true
 */
export function applyPushRuleEdit(set: PushRuleSet, edit: PushRuleEdit): PushRuleEditResult {
  const rules = set.global[edit.kind] ?? []
  const index = rules.findIndex((r) => r.rule_id === edit.ruleId)
  const existing = rules[index]
  switch (edit.op) {
    case 'enabled':
    case 'actions': {
      if (!existing) return fail('not_found', `no ${edit.kind} push rule ${edit.ruleId}`)
      const changed = edit.op === 'enabled' ? { ...existing, enabled: edit.enabled } : { ...existing, actions: edit.actions }
      return { ok: true, rules: withKind(set, edit.kind, rules.with(index, changed)) }
    }
    case 'delete': {
      if (!existing) return fail('not_found', `no ${edit.kind} push rule ${edit.ruleId}`)
      if (existing.default) return fail('invalid', 'server-default push rules cannot be deleted')
      return { ok: true, rules: withKind(set, edit.kind, rules.toSpliced(index, 1)) }
    }
    case 'put': {
      if (edit.ruleId.startsWith('.')) return fail('invalid', 'rule IDs starting with "." are reserved for server-default rules')
      if (edit.before !== undefined && edit.after !== undefined) return fail('invalid', 'give either before or after, not both')
      if (edit.kind === 'content' && edit.pattern === undefined) return fail('invalid', 'content rules need a pattern')
      const rule: PushRule = {
        rule_id: edit.ruleId,
        default: false,
        enabled: existing?.enabled ?? true,
        actions: edit.actions,
        ...((edit.kind === 'override' || edit.kind === 'underride') && { conditions: edit.conditions ?? [] }),
        ...(edit.kind === 'content' && { pattern: edit.pattern }),
      }
      const anchorId = edit.before ?? edit.after
      if (anchorId === undefined) {
        if (existing) return { ok: true, rules: withKind(set, edit.kind, rules.with(index, rule)) }
        return { ok: true, rules: withKind(set, edit.kind, rules.toSpliced(frontOfUserRules(rules, edit.kind), 0, rule)) }
      }
      const others = existing ? rules.toSpliced(index, 1) : rules
      const anchor = others.findIndex((r) => r.rule_id === anchorId)
      if (anchor === -1) return fail('not_found', `no ${edit.kind} push rule ${anchorId} to place the rule next to`)
      if (others[anchor]?.default) return fail('invalid', 'before and after must name a user-defined rule')
      const at = edit.before !== undefined ? anchor : anchor + 1
      return { ok: true, rules: withKind(set, edit.kind, others.toSpliced(at, 0, rule)) }
    }
  }
}

/**
 * The rule sets of `userIds` as they are now, without writing: a user with none stored has the
 * defaults (what `getPushRules` would store). For evaluating rules (storage/push-evaluator.ts).
 *
 * @example
 * (await pushRulesOf(db, ['@alice:example.org'])).get('@alice:example.org')!.global.override[0].rule_id // '.m.rule.master'
 */
export async function pushRulesOf(db: Kysely<Database>, userIds: readonly string[]): Promise<Map<string, PushRuleSet>> {
  const rows = userIds.length === 0 ? [] : await db.selectFrom('push_rules').select(['user_id', 'rules']).where('user_id', 'in', [...userIds]).execute()
  const stored = new Map(rows.map((row) => [row.user_id, row.rules as PushRuleSet]))
  return new Map(userIds.map((userId) => [userId, stored.get(userId) ?? defaultPushRules(userId)]))
}

/**
 * The user's rule set; stores the defaults on first read (so they count as account data).
 *
 * @example
 * const rules = await getPushRules(db, '@alice:example.org')
 * rules.global.underride.map((r) => r.rule_id) // ['.m.rule.call', …]
 */
export async function getPushRules(db: Kysely<Database>, userId: string): Promise<PushRuleSet> {
  const row = await db.selectFrom('push_rules').select('rules').where('user_id', '=', userId).executeTakeFirst()
  if (row) return row.rules as PushRuleSet
  return db.transaction().execute(async (trx) => {
    const streamId = await allocateAccountDataStreamId(trx)
    await trx
      .insertInto('push_rules')
      .values({ user_id: userId, rules: JSON.stringify(defaultPushRules(userId)), stream_id: streamId })
      .onConflict((oc) => oc.column('user_id').doNothing())
      .execute()
    const stored = await trx.selectFrom('push_rules').select('rules').where('user_id', '=', userId).executeTakeFirstOrThrow()
    return stored.rules as PushRuleSet
  })
}

/**
 * Applies an edit in one transaction (serialized with every other account data write) and stores
 * the result with a new stream ID; a failed edit changes nothing.
 *
 * @example
 * const result = await editPushRules(db, userId, { op: 'put', kind: 'room', ruleId: '!r:example.org', actions: [] })
 * if (!result.ok && result.reason === 'not_found') { … }
 */
export async function editPushRules(db: Kysely<Database>, userId: string, edit: PushRuleEdit): Promise<PushRuleEditResult> {
  return db.transaction().execute(async (trx) => {
    const streamId = await allocateAccountDataStreamId(trx)
    // The stream lock taken above serializes edits: the set read here is the latest.
    const current = (await pushRulesOf(trx, [userId])).get(userId)!
    const result = applyPushRuleEdit(current, edit)
    if (!result.ok) return result
    const rules = JSON.stringify(result.rules)
    await trx
      .insertInto('push_rules')
      .values({ user_id: userId, rules, stream_id: streamId })
      .onConflict((oc) => oc.column('user_id').doUpdateSet({ rules, stream_id: streamId }))
      .execute()
    return result
  })
}
