import { expect } from 'chai'
import { isStorageError, type ErrorCode } from '../../storage/errors.js'

/**
 * Asserts that `fn` throws a StorageError with `code` whose message matches `pattern`.
 *
 * @example
 * expectStorageError(() => createShardMap({ writers: [] }), 'ES_CONFIG_INVALID', /no writers/)
 */
export function expectStorageError(fn: () => unknown, code: ErrorCode, pattern: RegExp): void {
  try {
    fn()
  } catch (err) {
    expect(isStorageError(err, code), String(err)).to.equal(true)
    expect((err as Error).message).to.match(pattern)
    return
  }
  expect.fail(`expected ${code}`)
}
