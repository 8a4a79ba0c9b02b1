"""The Fast R-CNN style detector trained on clicked localisations (docs/method.md, section 5).

  box_coding   Fast R-CNN box-regression targets and their inverse (numpy).
  sampling     RoI sampling: foreground / background proposals of one image (numpy).
  head         `FastRcnnHead`: fc6, fc7, (C+1)-way classifier and class-specific box deltas.
  fast_rcnn    `FastRcnn`: trunk + the features module's `RoiPooling` + the head.
  train        the training loop (one place, top to bottom), under a `tf.distribute` strategy.
  inference    detections of one image: scores, decoded boxes, per-class NMS.
  scorer       the detector as MIL's appearance scorer (deep MIL).

Which image features the detector sees is the bag source's business (`bags.TrunkMapBags`): the
head runs on RoI features pooled from the cached trunk maps exactly as MIL's SVMs do, so the
detector and the learner agree on what a proposal looks like.
"""
