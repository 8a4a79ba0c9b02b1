"""`FastRcnn`: a trunk, the features module's `RoiPooling`, and `FastRcnnHead`."""

import keras

from click_supervision import features as features_lib
from click_supervision.detector import head as head_lib


@keras.saving.register_keras_serializable(package='click_supervision')
class FastRcnn(keras.Model):
  """Fast R-CNN style detector over externally given proposals.

  The pooling is `features.RoiPooling` with the trunk's stride and offset, so a head trained on
  the trunk-map cache (`--detector_finetune=none`, where the model runs without its trunk on
  cached maps) sees the same numbers as this model running its trunk on the image, provided the
  image is resized and padded as `features.FeatureExtractor` does.

  Args:
    num_classes: C.
    feature_stride: int, image pixels per feature cell of the trunk.
    feature_offset: float, pixels (`features` module docstring).
    pool_size: RoI grid side.
    hidden_units, dropout, seed: the head's (`FastRcnnHead`).
    trunk: optional keras.Model, float32 [B, H, W, 3] RGB 0-255 -> [B, h, w, channels]. Without
      one, the model takes feature maps.

  Call args:
    inputs: dict with `boxes` float32 [N, 4] `[ymin, xmin, ymax, xmax]` in pixels of the image
      the trunk sees (resized), `box_indices` int32 [N] (which image of the batch), and either
      `images` float32 [B, H, W, 3] (with a trunk) or `feature_maps` float [B, h, w, channels].
  Returns:
    the head's dict: `class_logits` float32 [N, C + 1], `box_deltas` float32 [N, C, 4].
  """

  def __init__(self, num_classes, feature_stride, feature_offset=0.0, pool_size=3,
               hidden_units=1024, dropout=0.5, seed=None, trunk=None, **kwargs):
    super().__init__(**kwargs)
    self.num_classes = int(num_classes)
    self.feature_stride = int(feature_stride)
    self.feature_offset = float(feature_offset)
    self.pool_size = int(pool_size)
    self.trunk = trunk
    self.roi_pooling = features_lib.RoiPooling(stride=self.feature_stride,
                                               offset=self.feature_offset,
                                               pool_size=self.pool_size)
    self.head = head_lib.FastRcnnHead(num_classes, hidden_units=hidden_units, dropout=dropout,
                                      seed=seed)

  def call(self, inputs, training=False):
    if 'images' in inputs:
      if self.trunk is None:
        raise ValueError('this FastRcnn has no trunk: give it `feature_maps`, not `images`')
      feature_maps = self.trunk(inputs['images'], training=False)  # BatchNorm stays frozen.
    else:
      feature_maps = inputs['feature_maps']
    pooled = self.roi_pooling(feature_maps, inputs['boxes'], inputs['box_indices'])
    return self.head(pooled, training=training)

  def get_config(self):
    config = super().get_config()
    config.update({
        'num_classes': self.num_classes, 'feature_stride': self.feature_stride,
        'feature_offset': self.feature_offset, 'pool_size': self.pool_size,
        'hidden_units': self.head.hidden_units, 'dropout': self.head.dropout,
        'seed': self.head.seed,
        'trunk': keras.saving.serialize_keras_object(self.trunk) if self.trunk else None})
    return config

  @classmethod
  def from_config(cls, config):
    config = dict(config)
    if config.get('trunk') is not None:
      trunk = keras.saving.deserialize_keras_object(config['trunk'])
      # Plain attributes of the trunk (`backbones.build_trunk`) are not part of a Keras config.
      trunk.feature_stride = config['feature_stride']
      trunk.feature_offset = config['feature_offset']
      config['trunk'] = trunk
    return cls(**config)
