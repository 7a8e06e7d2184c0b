"""Every public class of `keras.layers`, `keras.losses` and `keras.metrics`, made with documented
arguments and small generated inputs, for the contract's sweep (`spec_impl.contract.sweep`).

`COMPONENTS` (a `Catalogue`) maps a name to a `Component`: the factory (found by a fresh process
as `spec_impl.contract.keras_components:COMPONENTS.factories.NAME`), the inputs' shapes and
dtypes (or, for a loss or metric, the shape and the kind of targets), and the Keras class it
covers. `NOT_SWEPT` names the public classes that cannot be built here, each with the reason. A
class of the installed Keras in neither is reported by `sweep.coverage()` as not covered.
"""

import keras

from spec_impl.contract.catalogue import Catalogue
from spec_impl.contract.catalogue import with_kwargs as _kw

L, LOSSES, METRICS = keras.layers, keras.losses, keras.metrics
IMAGE = (8, 8, 3)  # a small image for the preprocessing and augmentation layers
SEQUENCE = (6, 5)  # (time, features)
VECTOR = (5,)
VOLUME = (4, 4, 4, 2)
VOCABULARY = ["the", "cat", "sat", "on", "a", "mat"]  # words of the generated strings

COMPONENTS = Catalogue(__name__, "COMPONENTS")
layer, loss, metric = COMPONENTS.layer, COMPONENTS.loss, COMPONENTS.metric


# Core, activations, regularization, reshaping.
layer("Activation", _kw(L.Activation, "relu"), VECTOR)
layer("ActivityRegularization", _kw(L.ActivityRegularization, l1=0.01), VECTOR)
layer("Dense", _kw(L.Dense, 3), VECTOR)
layer("EinsumDense", _kw(L.EinsumDense, "ab,bc->ac", output_shape=3, bias_axes="c"), VECTOR)
layer("Embedding", _kw(L.Embedding, 10, 4), (6,), dtypes=["int32"])
layer("Embedding__mask_zero", _kw(L.Embedding, 10, 4, mask_zero=True), (6,), dtypes=["int32"],
      covers="Embedding")
layer("ReversibleEmbedding", _kw(L.ReversibleEmbedding, 10, 4), (6,), dtypes=["int32"])
layer("Identity", _kw(L.Identity), VECTOR)
layer("Lambda", _kw(L.Lambda, keras.activations.relu), VECTOR)
layer("Masking", _kw(L.Masking, 0.0), SEQUENCE)
layer("ELU", _kw(L.ELU), VECTOR)
layer("LeakyReLU", _kw(L.LeakyReLU), VECTOR)
layer("PReLU", _kw(L.PReLU), VECTOR)
layer("ReLU", _kw(L.ReLU), VECTOR)
layer("Softmax", _kw(L.Softmax), SEQUENCE)
layer("Dropout", _kw(L.Dropout, 0.5), VECTOR)
layer("AlphaDropout", _kw(L.AlphaDropout, 0.2), VECTOR)
layer("GaussianDropout", _kw(L.GaussianDropout, 0.2), VECTOR)
layer("GaussianNoise", _kw(L.GaussianNoise, 0.1), VECTOR)
layer("SpatialDropout1D", _kw(L.SpatialDropout1D, 0.2), SEQUENCE)
layer("SpatialDropout2D", _kw(L.SpatialDropout2D, 0.2), IMAGE)
layer("SpatialDropout3D", _kw(L.SpatialDropout3D, 0.2), VOLUME)
layer("Flatten", _kw(L.Flatten), (3, 4))
layer("Permute", _kw(L.Permute, (2, 1)), (3, 4))
layer("RepeatVector", _kw(L.RepeatVector, 3), VECTOR)
layer("Reshape", _kw(L.Reshape, (4, 3)), (12,))
for _n, _shape in ((1, (6, 3)), (2, IMAGE), (3, VOLUME)):
    layer(f"Cropping{_n}D", _kw(getattr(L, f"Cropping{_n}D"), 1), _shape)
    layer(f"UpSampling{_n}D", _kw(getattr(L, f"UpSampling{_n}D"), 2), _shape)
    layer(f"ZeroPadding{_n}D", _kw(getattr(L, f"ZeroPadding{_n}D"), 1), _shape)

# Convolution and pooling.
for _n, _shape in ((1, (6, 3)), (2, (6, 6, 3)), (3, VOLUME)):
    _size = 3 if _n < 3 else 2
    layer(f"Conv{_n}D", _kw(getattr(L, f"Conv{_n}D"), 2, _size), _shape)
    layer(f"Conv{_n}DTranspose", _kw(getattr(L, f"Conv{_n}DTranspose"), 2, _size), _shape)
    layer(f"AveragePooling{_n}D", _kw(getattr(L, f"AveragePooling{_n}D"), 2), _shape)
    layer(f"MaxPooling{_n}D", _kw(getattr(L, f"MaxPooling{_n}D"), 2), _shape)
    layer(f"GlobalAveragePooling{_n}D", _kw(getattr(L, f"GlobalAveragePooling{_n}D")), _shape)
    layer(f"GlobalMaxPooling{_n}D", _kw(getattr(L, f"GlobalMaxPooling{_n}D")), _shape)
    layer(f"AdaptiveAveragePooling{_n}D", _kw(getattr(L, f"AdaptiveAveragePooling{_n}D"), 2), _shape)
    layer(f"AdaptiveMaxPooling{_n}D", _kw(getattr(L, f"AdaptiveMaxPooling{_n}D"), 2), _shape)
for _n, _shape in ((1, (6, 3)), (2, (6, 6, 3))):
    layer(f"DepthwiseConv{_n}D", _kw(getattr(L, f"DepthwiseConv{_n}D"), 3), _shape)
    layer(f"SeparableConv{_n}D", _kw(getattr(L, f"SeparableConv{_n}D"), 2, 3), _shape)
layer("ConvLSTM1D", _kw(L.ConvLSTM1D, 2, 3), (3, 6, 2))
layer("ConvLSTM2D", _kw(L.ConvLSTM2D, 2, 3), (3, 5, 5, 2))
layer("ConvLSTM3D", _kw(L.ConvLSTM3D, 2, 2), (2, 3, 3, 3, 1))

# Normalization.
layer("BatchNormalization", _kw(L.BatchNormalization), VECTOR)
layer("GroupNormalization", _kw(L.GroupNormalization, groups=2), (6, 4))
layer("LayerNormalization", _kw(L.LayerNormalization), VECTOR)
layer("RMSNormalization", _kw(L.RMSNormalization), VECTOR)
layer("UnitNormalization", _kw(L.UnitNormalization), VECTOR)
layer("SpectralNormalization", lambda **kw: L.SpectralNormalization(L.Dense(3, **kw), **kw), VECTOR)

# Recurrent layers, and the cells inside `RNN`.
layer("GRU", _kw(L.GRU, 4), SEQUENCE)
layer("GRU__sequences", _kw(L.GRU, 4, return_sequences=True), SEQUENCE, covers="GRU")
layer("LSTM", _kw(L.LSTM, 3), SEQUENCE)
layer("SimpleRNN", _kw(L.SimpleRNN, 4), SEQUENCE)
layer("Bidirectional", lambda **kw: L.Bidirectional(L.LSTM(3, **kw), **kw), SEQUENCE)
layer("TimeDistributed", lambda **kw: L.TimeDistributed(L.Dense(3, **kw), **kw), SEQUENCE)
for _cell in ("GRUCell", "LSTMCell", "SimpleRNNCell"):
    layer(f"RNN__{_cell}", lambda cell=_cell, **kw: L.RNN(getattr(L, cell)(3, **kw), **kw), SEQUENCE,
          covers=_cell)
layer("RNN__StackedRNNCells",
      lambda **kw: L.RNN(L.StackedRNNCells([L.GRUCell(3, **kw), L.LSTMCell(2, **kw)], **kw), **kw),
      SEQUENCE, covers="StackedRNNCells")
layer("RNN", lambda **kw: L.RNN(L.SimpleRNNCell(3, **kw), return_sequences=True, **kw), SEQUENCE)

# Attention and merging.
layer("Attention", _kw(L.Attention), [(3, 4), (2, 4)])
layer("AdditiveAttention", _kw(L.AdditiveAttention), [(3, 4), (2, 4)])
layer("MultiHeadAttention", _kw(L.MultiHeadAttention, 2, 4), (3, 5), (4, 5))
layer("GroupQueryAttention",
      _kw(L.GroupQueryAttention, head_dim=4, num_query_heads=2, num_key_value_heads=1),
      (3, 8), (2, 8))
for _merge in ("Add", "Average", "Maximum", "Minimum", "Multiply", "Subtract"):
    layer(_merge, _kw(getattr(L, _merge)), [VECTOR, VECTOR])
layer("Concatenate", _kw(L.Concatenate), [VECTOR, (3,)])
layer("Dot", _kw(L.Dot, axes=1), [VECTOR, VECTOR])

# Preprocessing: numbers, ids, strings, audio.
layer("Normalization", _kw(L.Normalization, mean=0.0, variance=1.0), VECTOR)
layer("Discretization", _kw(L.Discretization, bin_boundaries=[-0.5, 0.0, 0.5]), VECTOR)
layer("CategoryEncoding", _kw(L.CategoryEncoding, num_tokens=10, output_mode="multi_hot"), (3,),
      dtypes=["int32"])
layer("Hashing", _kw(L.Hashing, num_bins=5), (3,), dtypes=["string"])
layer("HashedCrossing", _kw(L.HashedCrossing, num_bins=5), [(1,), (1,)], dtypes=["int32", "int32"])
layer("IntegerLookup", _kw(L.IntegerLookup, vocabulary=[1, 2, 3]), (3,), dtypes=["int64"])
layer("StringLookup", _kw(L.StringLookup, vocabulary=VOCABULARY), (3,), dtypes=["string"])
layer("TextVectorization",
      _kw(L.TextVectorization, vocabulary=VOCABULARY, output_sequence_length=4), (1,),
      dtypes=["string"])
layer("Rescaling", _kw(L.Rescaling, 1 / 255), VECTOR)
# `Pipeline` takes no `dtype`: made under the global policy.
layer("Pipeline", lambda: L.Pipeline([L.Rescaling(2.0), L.Identity()]), VECTOR)
layer("MelSpectrogram", _kw(L.MelSpectrogram, fft_length=64, sequence_stride=16, num_mel_bins=8),
      (128,))
layer("STFTSpectrogram", _kw(L.STFTSpectrogram, frame_length=32, frame_step=16, fft_length=32),
      (128, 1))

# Images: resizing and random augmentation (which draws only in training).
layer("CenterCrop", _kw(L.CenterCrop, 4, 4), IMAGE)
layer("Resizing", _kw(L.Resizing, 4, 4), IMAGE)
layer("RandomCrop", _kw(L.RandomCrop, 4, 4), IMAGE)
layer("MaxNumBoundingBoxes", _kw(L.MaxNumBoundingBoxes, max_number=3), IMAGE)
for _name, _args in (
        ("AugMix", ()), ("AutoContrast", ()), ("ContrastLimitedAdaptiveHistogramEqualization", ()),
        ("CutMix", ()), ("Equalization", ()), ("MixUp", ()), ("RandAugment", ()),
        ("RandomBrightness", (0.2,)), ("RandomColorDegeneration", (0.2,)),
        ("RandomColorJitter", ()), ("RandomContrast", (0.2,)), ("RandomElasticTransform", ()),
        ("RandomErasing", ()), ("RandomFlip", ()), ("RandomGaussianBlur", ()),
        ("RandomGrayscale", ()), ("RandomHue", (0.2,)), ("RandomInvert", ()),
        ("RandomPerspective", ()), ("RandomPosterization", (4,)), ("RandomRotation", (0.2,)),
        ("RandomSaturation", (0.2,)), ("RandomSharpness", (0.2,)), ("RandomShear", (0.2,)),
        ("RandomTranslation", (0.2, 0.2)), ("RandomZoom", (0.2,)), ("Solarization", ())):
    layer(_name, _kw(getattr(L, _name), *_args), IMAGE)

# Losses: the targets each expects, as its name declares them.
for _name in ("BinaryCrossentropy", "BinaryFocalCrossentropy", "CategoricalCrossentropy",
              "CategoricalFocalCrossentropy", "CategoricalHinge", "CosineSimilarity", "Dice",
              "Hinge", "Huber", "KLDivergence", "LogCosh", "MeanAbsoluteError",
              "MeanAbsolutePercentageError", "MeanSquaredError", "MeanSquaredLogarithmicError",
              "Poisson", "SparseCategoricalCrossentropy", "SquaredHinge", "Tversky"):
    loss(_name, _kw(getattr(LOSSES, _name)))
loss("CategoricalCrossentropy__logits", _kw(LOSSES.CategoricalCrossentropy, from_logits=True),
     covers="CategoricalCrossentropy")
loss("SparseCategoricalCrossentropy__logits",
     _kw(LOSSES.SparseCategoricalCrossentropy, from_logits=True), covers="SparseCategoricalCrossentropy")
loss("CategoricalGeneralizedCrossEntropy", _kw(LOSSES.CategoricalGeneralizedCrossEntropy),
     target="sparse")
loss("Circle", _kw(LOSSES.Circle), (4,), target="sparse")
loss("CTC", _kw(LOSSES.CTC), (6, 4), target="sequence")

# Metrics.
for _name in ("AUC", "BinaryAccuracy", "BinaryCrossentropy", "CategoricalAccuracy",
              "CategoricalCrossentropy", "CategoricalHinge", "CosineSimilarity", "FalseNegatives",
              "FalsePositives", "Hinge", "KLDivergence", "LogCoshError", "MeanAbsoluteError",
              "MeanAbsolutePercentageError", "MeanSquaredError", "MeanSquaredLogarithmicError",
              "Poisson", "Precision", "Recall", "RootMeanSquaredError", "SparseCategoricalAccuracy",
              "SparseCategoricalCrossentropy", "SquaredHinge", "TrueNegatives", "TruePositives"):
    metric(_name, _kw(getattr(METRICS, _name)))
metric("Accuracy", _kw(METRICS.Accuracy), target="classes")
metric("BinaryIoU", _kw(METRICS.BinaryIoU), target="binary")
metric("ConcordanceCorrelation", _kw(METRICS.ConcordanceCorrelation), target="regression")
metric("PearsonCorrelation", _kw(METRICS.PearsonCorrelation), target="regression")
metric("R2Score", _kw(METRICS.R2Score), target="regression")
metric("F1Score", _kw(METRICS.F1Score), target="binary")
metric("FBetaScore", _kw(METRICS.FBetaScore), target="binary")
metric("IoU", _kw(METRICS.IoU, num_classes=3, target_class_ids=[0, 1]), target="classes")
metric("MeanIoU", _kw(METRICS.MeanIoU, num_classes=3), target="classes")
metric("OneHotIoU", _kw(METRICS.OneHotIoU, num_classes=3, target_class_ids=[0, 1]),
       target="categorical")
metric("OneHotMeanIoU", _kw(METRICS.OneHotMeanIoU, num_classes=3), target="categorical")
metric("Mean", _kw(METRICS.Mean))
metric("Sum", _kw(METRICS.Sum))
metric("MeanMetricWrapper", _kw(METRICS.MeanMetricWrapper, keras.losses.mean_squared_error))
metric("PrecisionAtRecall", _kw(METRICS.PrecisionAtRecall, 0.5), target="binary")
metric("RecallAtPrecision", _kw(METRICS.RecallAtPrecision, 0.5), target="binary")
metric("SensitivityAtSpecificity", _kw(METRICS.SensitivityAtSpecificity, 0.5), target="binary")
metric("SpecificityAtSensitivity", _kw(METRICS.SpecificityAtSensitivity, 0.5), target="binary")
metric("TopKCategoricalAccuracy", _kw(METRICS.TopKCategoricalAccuracy, k=2), (4,))
metric("SparseTopKCategoricalAccuracy", _kw(METRICS.SparseTopKCategoricalAccuracy, k=2), (4,))

# Public classes of the three modules that the sweep cannot build, with the reason.
NOT_SWEPT = {
    "layers.Layer": "the base class (every entry is one)",
    "layers.Wrapper": "an abstract base class (checked as TimeDistributed, Bidirectional, "
                      "SpectralNormalization)",
    "layers.InputLayer": "a model's input, not called on tensors (in every Functional model)",
    "layers.InputSpec": "not a layer: the spec a layer checks its inputs against",
    "layers.JaxLayer": "wraps a JAX function: runs on the JAX backend only",
    "layers.FlaxLayer": "wraps a Flax module: runs on the JAX backend only",
    "layers.TorchModuleWrapper": "wraps a PyTorch module: runs on the PyTorch backend only",
    "layers.TFSMLayer": "loads a SavedModel from disk: an external resource",
    "losses.Loss": "the base class",
    "metrics.Metric": "the base class",
}

# The checks Keras's own components fail on this Keras, each a defect of Keras reproduced in
# plain Keras by `tests/test_contract_sweep.py` (entry -> {check: what is wrong}).
UPSTREAM_DEFECTS = {
    "Softmax": {"masking": "takes the (batch, time) mask a masked sequence carries as its own "
                           "`mask` argument, which must broadcast to (batch, time, features), and "
                           "raises"},
    "CategoryEncoding": {"dtype_policy": "under mixed_float16 its outputs are float32 (it encodes "
                                         "in `self.dtype`), while `compute_output_spec` says float16"},
    "MelSpectrogram": {"dtype_policy": "under float64 it subtracts a float32 tensor from a float64 "
                                       "one and raises"},
    "STFTSpectrogram": {"dtype_policy": "under mixed_bfloat16 `keras.ops.stft` refuses its bfloat16 "
                                        "input"},
    "RandomCrop": {"eager_call": "at inference it returns the uncropped image, while "
                                 "`compute_output_shape` (and its docstring) give the target size"},
    "Equalization": {"keras_reload": "its symbolic call returns its input tensor, so a Functional "
                                     "model around it is 'part of a cycle'",
                     "training_step": "the same: no Functional model can hold it"},
    "MixUp": {"eager_function_xla": "XLA has no kernel for the gamma draw it traces "
                                    "(StatelessRandomGammaV3) and it does not declare "
                                    "`supports_jit = False`"},
    "RandomShear": {"config_round_trip": "`from_config(get_config())` raises a TypeError"},
    "metric_F1Score": {"state_at_construction": "no variables until the first update, and "
                                                "`result()` before it raises AttributeError"},
    "metric_FBetaScore": {"state_at_construction": "as F1Score"},
    "metric_R2Score": {"state_at_construction": "variables made at the first update, and "
                                                "`result()` before it raises AttributeError"},
}
