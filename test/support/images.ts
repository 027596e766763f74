import { createJimp } from '@jimp/core'
import gif from '@jimp/js-gif'
import jpeg from '@jimp/js-jpeg'
import png from '@jimp/js-png'

const Jimp = createJimp({ formats: [png, jpeg, gif] })

/** An image of `width`×`height` with a diagonal gradient (so that scaling has something to scale). */
export async function testImage(width: number, height: number, type: 'image/png' | 'image/jpeg' | 'image/gif'): Promise<Buffer> {
  const image = new Jimp({ width, height, color: 0x000000ff })
  for (let y = 0; y < height; y++) {
    for (let x = 0; x < width; x++) {
      const i = (y * width + x) * 4
      image.bitmap.data[i] = (x * 255) / width
      image.bitmap.data[i + 1] = (y * 255) / height
      image.bitmap.data[i + 2] = 128
      image.bitmap.data[i + 3] = 255
    }
  }
  return image.getBuffer(type)
}
