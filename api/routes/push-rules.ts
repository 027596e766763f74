import type { FastifyPluginAsync } from 'fastify'
import { editPushRules, getPushRules, pushRuleKinds, type PushAction, type PushCondition, type PushRuleEdit, type PushRuleKind, type PushRuleSet } from '../../storage/push-rules.js'
import { clientRoute } from '../client-route.js'
import { invalidParam, MatrixError, notFound } from '../errors.js'
import { requireUser } from '../require-user.js'

/**
 * Push rules (client-server API "Push Rules: API"), stored per user (storage/push-rules.ts):
 * `GET /pushrules/`, `GET /pushrules/global/`, `GET|PUT|DELETE /pushrules/global/{kind}/{ruleId}`,
 * `GET|PUT …/{ruleId}/enabled` and `GET|PUT …/{ruleId}/actions`. The only scope is `global`.
 */

const actionSchema = {
  anyOf: [
    { type: 'string', enum: ['notify', 'dont_notify', 'coalesce'] },
    { type: 'object', required: ['set_tweak'], properties: { set_tweak: { type: 'string', maxLength: 255 } } },
  ],
} as const
const actionsSchema = { type: 'array', maxItems: 100, items: actionSchema } as const

const ruleParams = {
  type: 'object',
  required: ['scope', 'kind', 'ruleId'],
  properties: {
    scope: { type: 'string', maxLength: 255 },
    kind: { type: 'string', maxLength: 255 },
    ruleId: { type: 'string', minLength: 1, maxLength: 255 },
  },
} as const

interface RuleParams {
  scope: string
  kind: string
  ruleId: string
}

function checkScope(scope: string): void {
  if (scope !== 'global') throw invalidParam('The only push rule scope is "global"')
}

/** The rule kind of the path (after checking its scope); 400 for anything else. */
function ruleKind(params: RuleParams): PushRuleKind {
  checkScope(params.scope)
  if (!(pushRuleKinds as readonly string[]).includes(params.kind)) throw invalidParam(`Unknown push rule kind ${JSON.stringify(params.kind)}`)
  return params.kind as PushRuleKind
}

function findRule(rules: PushRuleSet, kind: PushRuleKind, ruleId: string) {
  const rule = rules.global[kind].find((r) => r.rule_id === ruleId)
  if (!rule) throw notFound('Unknown push rule')
  return rule
}

export const pushRuleRoutes: FastifyPluginAsync = async (app) => {
  const { db } = app.myelin

  async function edit(userId: string, change: PushRuleEdit): Promise<Record<string, never>> {
    const result = await editPushRules(db, userId, change)
    if (result.ok) return {}
    if (result.reason === 'not_found') throw notFound(result.message)
    throw new MatrixError(400, 'M_INVALID_PARAM', result.message)
  }

  clientRoute(app, {
    method: 'GET',
    path: '/pushrules',
    schema: {},
    handler: async (request) => {
      const { userId } = await requireUser(request)
      return getPushRules(db, userId)
    },
  })

  clientRoute<{ Params: { scope: string } }>(app, {
    method: 'GET',
    path: '/pushrules/:scope',
    schema: { params: { type: 'object', required: ['scope'], properties: { scope: { type: 'string', maxLength: 255 } } } },
    handler: async (request) => {
      const { userId } = await requireUser(request)
      checkScope(request.params.scope)
      return (await getPushRules(db, userId)).global
    },
  })

  clientRoute<{ Params: RuleParams }>(app, {
    method: 'GET',
    path: '/pushrules/:scope/:kind/:ruleId',
    schema: { params: ruleParams },
    handler: async (request) => {
      const { userId } = await requireUser(request)
      const kind = ruleKind(request.params)
      return findRule(await getPushRules(db, userId), kind, request.params.ruleId)
    },
  })

  clientRoute<{
    Params: RuleParams
    Querystring: { before?: string; after?: string }
    Body: { actions: PushAction[]; conditions?: PushCondition[]; pattern?: string }
  }>(app, {
    method: 'PUT',
    path: '/pushrules/:scope/:kind/:ruleId',
    schema: {
      params: ruleParams,
      querystring: { type: 'object', properties: { before: { type: 'string', maxLength: 255 }, after: { type: 'string', maxLength: 255 } } },
      body: {
        type: 'object',
        required: ['actions'],
        properties: {
          actions: actionsSchema,
          conditions: { type: 'array', maxItems: 100, items: { type: 'object', required: ['kind'], properties: { kind: { type: 'string', maxLength: 255 } } } },
          pattern: { type: 'string', maxLength: 1000 },
        },
      },
    },
    handler: async (request) => {
      const { userId } = await requireUser(request)
      const kind = ruleKind(request.params)
      const { actions, conditions, pattern } = request.body
      const { before, after } = request.query
      return edit(userId, {
        op: 'put',
        kind,
        ruleId: request.params.ruleId,
        actions,
        ...(conditions !== undefined && { conditions }),
        ...(pattern !== undefined && { pattern }),
        ...(before !== undefined && { before }),
        ...(after !== undefined && { after }),
      })
    },
  })

  clientRoute<{ Params: RuleParams }>(app, {
    method: 'DELETE',
    path: '/pushrules/:scope/:kind/:ruleId',
    schema: { params: ruleParams },
    handler: async (request) => {
      const { userId } = await requireUser(request)
      const kind = ruleKind(request.params)
      return edit(userId, { op: 'delete', kind, ruleId: request.params.ruleId })
    },
  })

  clientRoute<{ Params: RuleParams }>(app, {
    method: 'GET',
    path: '/pushrules/:scope/:kind/:ruleId/enabled',
    schema: { params: ruleParams },
    handler: async (request) => {
      const { userId } = await requireUser(request)
      const kind = ruleKind(request.params)
      return { enabled: findRule(await getPushRules(db, userId), kind, request.params.ruleId).enabled }
    },
  })

  clientRoute<{ Params: RuleParams; Body: { enabled: boolean } }>(app, {
    method: 'PUT',
    path: '/pushrules/:scope/:kind/:ruleId/enabled',
    schema: { params: ruleParams, body: { type: 'object', required: ['enabled'], properties: { enabled: { type: 'boolean' } } } },
    handler: async (request) => {
      const { userId } = await requireUser(request)
      const kind = ruleKind(request.params)
      return edit(userId, { op: 'enabled', kind, ruleId: request.params.ruleId, enabled: request.body.enabled })
    },
  })

  clientRoute<{ Params: RuleParams }>(app, {
    method: 'GET',
    path: '/pushrules/:scope/:kind/:ruleId/actions',
    schema: { params: ruleParams },
    handler: async (request) => {
      const { userId } = await requireUser(request)
      const kind = ruleKind(request.params)
      return { actions: findRule(await getPushRules(db, userId), kind, request.params.ruleId).actions }
    },
  })

  clientRoute<{ Params: RuleParams; Body: { actions: PushAction[] } }>(app, {
    method: 'PUT',
    path: '/pushrules/:scope/:kind/:ruleId/actions',
    schema: { params: ruleParams, body: { type: 'object', required: ['actions'], properties: { actions: actionsSchema } } },
    handler: async (request) => {
      const { userId } = await requireUser(request)
      const kind = ruleKind(request.params)
      return edit(userId, { op: 'actions', kind, ruleId: request.params.ruleId, actions: request.body.actions })
    },
  })
}
