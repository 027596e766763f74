import { spawn } from 'node:child_process'
import { existsSync } from 'node:fs'
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { expect } from 'chai'
import { lockDataDir, lockFileName } from '../../../../api/cli/data-lock.js'
import { StorageError } from '../../../../storage/errors.js'

describe('lockDataDir (one myelin cluster per data folder)', () => {
  let dir: string
  beforeEach(async () => {
    dir = await mkdtemp(join(tmpdir(), 'myelin-lock-'))
  })
  afterEach(() => rm(dir, { recursive: true, force: true }))

  it('should write this PID and remove the file on release', async () => {
    const release = await lockDataDir(dir)
    expect(await readFile(join(dir, lockFileName), 'utf8')).to.equal(`${process.pid}\n`)
    await release()
    expect(existsSync(join(dir, lockFileName))).to.equal(false)
  })

  it('should take over a lock whose process is gone or is not a myelin process', async () => {
    const gone = spawn(process.execPath, ['-e', ''])
    await new Promise((resolve) => gone.once('exit', resolve))
    for (const stale of [`${gone.pid}\n`, '1\n', '', 'garbage']) {
      await writeFile(join(dir, lockFileName), stale)
      const release = await lockDataDir(dir)
      expect(await readFile(join(dir, lockFileName), 'utf8'), JSON.stringify(stale)).to.equal(`${process.pid}\n`)
      await release()
    }
  })

  it('should refuse a folder a live myelin process holds, naming its PID, and leave its lock alone', async () => {
    // A stand-in whose command line looks like bin/myelin's (it runs api/cli/main.ts).
    const holder = spawn(process.execPath, ['-e', 'setTimeout(() => {}, 20_000)', 'api/cli/main.ts'])
    try {
      // Once the kernel shows its command line (a CI run once read it too early: the test's
      // premise, not the lock, failed).
      const shown = () => readFile(`/proc/${holder.pid}/cmdline`, 'utf8').then((text) => text.includes('main.ts'), () => false)
      for (let waited = 0; !(await shown()); waited += 20) {
        if (waited > 5_000) throw new Error(`the stand-in ${holder.pid} never showed its command line`)
        await new Promise((resolve) => setTimeout(resolve, 20))
      }
      await writeFile(join(dir, lockFileName), `${holder.pid}\n`)
      const err = await lockDataDir(dir).then(
        () => undefined,
        (e: unknown) => e,
      )
      expect(err).to.be.instanceOf(StorageError)
      expect((err as StorageError).message).to.include(`in use by another myelin cluster (pid ${holder.pid})`)
      expect(await readFile(join(dir, lockFileName), 'utf8')).to.equal(`${holder.pid}\n`)
    } finally {
      holder.kill('SIGKILL')
    }
  })
})
