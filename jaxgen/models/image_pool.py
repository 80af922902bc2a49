"""CycleGAN's history of generated images (Shrivastava et al. 2017), as a pure function.

The reference `util/image_pool.py` (junyanz/pytorch-CycleGAN-and-pix2pix)
keeps up to `pool_size` (50) past fakes and feeds the discriminator, image by
image:
  - while fewer than `pool_size` are stored: the new image, which is stored;
  - afterwards, with probability 1/2: a random stored image, replaced by the
    new one; otherwise the new image (the pool is unchanged).
Images later in a batch see the pool as earlier ones left it.

Here the pool is a value, `{"images": (pool_size, H, W, C), "count": ()}`
(float32 throughout so it can sit in a params tree beside the networks), and
`query_pool` is a `lax.scan` over the batch that returns the images for the
discriminator and the next pool. A task keeps the pool among its params and
hands the new value back to the trainer (`STATE_UPDATES_KEY`); nothing
differentiates through it.
"""

from __future__ import annotations

from collections.abc import Sequence

import jax
import jax.numpy as jnp

Pool = dict[str, jax.Array]


def init_pool(pool_size: int, image_shape: Sequence[int]) -> Pool:
  """An empty pool for images of `image_shape` (H, W, C); pool_size 0 disables it."""
  if not isinstance(pool_size, int) or isinstance(pool_size, bool) or pool_size < 0:
    raise ValueError(f"pool_size: expected an int >= 0, found {pool_size!r}")
  return {
    "images": jnp.zeros((pool_size, *image_shape), jnp.float32),
    "count": jnp.zeros((), jnp.float32),
  }


def query_pool(pool: Pool, images: jax.Array, rng: jax.Array) -> tuple[jax.Array, Pool]:
  """(pool, new fakes (B, H, W, C), rng) -> (images for the discriminator, next pool)."""
  stored = pool["images"]
  pool_size = stored.shape[0]
  if images.shape[1:] != stored.shape[1:]:
    raise ValueError(
      f"images: expected (B, {', '.join(map(str, stored.shape[1:]))}) like the pool, "
      f"found {tuple(images.shape)}"
    )
  images = jax.lax.stop_gradient(images)
  if pool_size == 0:
    return images, pool

  def one_image(carry, inputs):
    stored, count = carry
    image, key = inputs
    coin_key, slot_key = jax.random.split(key)
    full = count >= pool_size
    swap = full & (jax.random.uniform(coin_key) > 0.5)
    random_slot = jax.random.randint(slot_key, (), 0, pool_size)
    slot = jnp.where(full, random_slot, count)
    old = stored[slot]
    image = image.astype(stored.dtype)
    # A full pool that keeps its images writes the old one back in place.
    stored = stored.at[slot].set(jnp.where(~full | swap, image, old))
    returned = jnp.where(swap, old, image)
    return (stored, jnp.minimum(count + 1, pool_size)), returned

  count = pool["count"].astype(jnp.int32)
  keys = jax.random.split(rng, images.shape[0])
  (stored, count), returned = jax.lax.scan(one_image, (stored, count), (images, keys))
  return returned.astype(images.dtype), {"images": stored, "count": count.astype(jnp.float32)}
