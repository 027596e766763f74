import { expect } from 'chai'
describe('toolchain', () => {
  it('should run on Node 24', () => {
    expect(process.versions.node.split('.')[0]).to.equal('24')
  })
})
