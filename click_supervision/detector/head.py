"""`FastRcnnHead`: the detector's fully connected head on pooled RoI features."""

import math

import keras
import tensorflow as tf


@keras.saving.register_keras_serializable(package='click_supervision')
class FastRcnnHead(keras.layers.Layer):
  """fc6 -> fc7 -> (C+1)-way classifier and class-specific box deltas (AlexNet-style head).

  The pooled RoI feature is flattened and L2-normalised, then scaled to norm sqrt(D) so its
  entries have unit mean square: the same direction the MIL learner's SVMs see (`bags` normalises
  every row), at the scale SGD on a freshly initialised dense layer wants. Normalising also makes
  the head indifferent to whether it is given raw pooled grids or the already-normalised rows of
  a `bags.Bag`.

  Args:
    num_classes: C, object classes (the classifier has C + 1 outputs, 0 = background).
    hidden_units: width of fc6 and fc7.
    dropout: dropout rate after fc6 and fc7 (training only).
    seed: optional int seeding the initial weights (training runs pass theirs, so a resumed
      run and an uninterrupted one start from the same weights).

  Call args:
    roi_features: float [N, ...] pooled features (e.g. [N, pool, pool, channels] or [N, D]).
    training: apply dropout.
    dropout_seed: optional int32 [2]: stateless dropout masks drawn from it (the training loop
      passes (seed, step), so a resumed run draws the masks an uninterrupted one would).
  Returns:
    dict with `class_logits` float32 [N, C + 1] and `box_deltas` float32 [N, C, 4]
    (normalised as `box_coding.encode`).
  """

  def __init__(self, num_classes, hidden_units=1024, dropout=0.5, seed=None, **kwargs):
    super().__init__(**kwargs)
    self.num_classes = int(num_classes)
    self.hidden_units = int(hidden_units)
    self.dropout = float(dropout)
    self.seed = seed

    def seeded(offset):
      return None if seed is None else int(seed) * 4 + offset

    self.fc6 = keras.layers.Dense(
        self.hidden_units, activation='relu', name='fc6',
        kernel_initializer=keras.initializers.GlorotUniform(seed=seeded(0)))
    self.fc7 = keras.layers.Dense(
        self.hidden_units, activation='relu', name='fc7',
        kernel_initializer=keras.initializers.GlorotUniform(seed=seeded(1)))
    # Fast R-CNN's initialisation of the two output layers: small, so the first steps predict
    # near-uniform classes and near-zero deltas.
    self.classifier = keras.layers.Dense(
        self.num_classes + 1, name='classifier',
        kernel_initializer=keras.initializers.RandomNormal(stddev=0.01, seed=seeded(2)))
    self.box_regressor = keras.layers.Dense(
        4 * self.num_classes, name='box_regressor',
        kernel_initializer=keras.initializers.RandomNormal(stddev=0.001, seed=seeded(3)))

  def build(self, input_shape):
    dim = math.prod(int(d) for d in input_shape[1:])
    self._scale = math.sqrt(dim)
    self.fc6.build((None, dim))
    self.fc7.build((None, self.hidden_units))
    self.classifier.build((None, self.hidden_units))
    self.box_regressor.build((None, self.hidden_units))

  def call(self, roi_features, training=False, dropout_seed=None):
    x = tf.reshape(tf.cast(roi_features, tf.float32), [tf.shape(roi_features)[0], -1])
    x = tf.math.l2_normalize(x, axis=1) * self._scale
    x = self._drop(self.fc6(x), training, dropout_seed, 0)
    x = self._drop(self.fc7(x), training, dropout_seed, 1)
    return {'class_logits': self.classifier(x),
            'box_deltas': tf.reshape(self.box_regressor(x), [-1, self.num_classes, 4])}

  def _drop(self, x, training, seed, layer):
    if not training or not self.dropout:
      return x
    if seed is None:
      seed = tf.random.uniform([2], maxval=2**31 - 1, dtype=tf.int32)
    seed = tf.cast(seed, tf.int32) + tf.constant([0, 1_000_003], tf.int32) * layer
    return tf.nn.experimental.stateless_dropout(x, self.dropout, seed=seed)

  def get_config(self):
    config = super().get_config()
    config.update({'num_classes': self.num_classes, 'hidden_units': self.hidden_units,
                   'dropout': self.dropout, 'seed': self.seed})
    return config
