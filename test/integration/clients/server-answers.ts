import { jsonLine } from '../../support/cli.js'
import type { TestCluster } from '../reliability/test-cluster.js'

/**
 * What a real client met at the server: every request a `myelin cluster` answered with an error,
 * from the api worker's `request completed` log lines, except 404s of unknown `unstable`
 * endpoints (an experimental feature Myelin does not offer answers 404 `M_UNRECOGNIZED`, as
 * Synapse does with the feature off) and the answers in `expected` (`"404 GET /path"`, the path
 * without its query). A route a client needs that Myelin lacks or breaks shows up here.
 *
 * @example
 * expect(unexpectedErrors(cluster, ['404 GET /_matrix/client/v3/user/%40bot%3Alocalhost/account_data/m.direct'])).to.deep.equal([])
 */
export function unexpectedErrors(cluster: TestCluster, expected: readonly string[] = []): string[] {
  const errors: string[] = []
  for (const line of cluster.run.output) {
    const entry = jsonLine(line)
    if (entry?.['msg'] !== 'request completed' || typeof entry['status'] !== 'number' || entry['status'] < 400) continue
    const path = String(entry['url']).split('?')[0] as string
    const answer = `${entry['status']} ${String(entry['method'])} ${path}`
    const unknownUnstable = entry['status'] === 404 && entry['route'] === null && path.startsWith('/_matrix/client/unstable/')
    if (!unknownUnstable && !expected.includes(answer)) errors.push(answer)
  }
  return errors
}
