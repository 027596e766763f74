'use strict'
// matrix-bot-sdk loads this module at start-up but only uses it for end-to-end encryption,
// which Myelin's bot test does not enable. Loading succeeds; using any export throws.
module.exports = new Proxy(
  {},
  {
    get(_target, name) {
      if (typeof name === 'symbol' || name === '__esModule' || name === 'then' || name === 'default') return undefined
      throw new Error(`end-to-end encryption is not available in Myelin's tests (${String(name)} of @matrix-org/matrix-sdk-crypto-nodejs)`)
    },
  },
)
