"""Tensors, operations, NumPy interop, casting, variables and other structures (document 003)."""

import numpy as np
import pytest
import tensorflow as tf

from spec_impl.testing import assert_allclose

T_VALUES = [[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]]  # document 003, "2x3 matrix"
T_GRAM = [[14.0, 32.0], [32.0, 77.0]]  # document 003, t @ tf.transpose(t)


@pytest.fixture
def t():
    return tf.constant(T_VALUES, dtype=tf.float32)


def test_constant_scalar_is_int32():
    s = tf.constant(42)
    assert s.shape == () and s.dtype == tf.int32 and int(s) == 42


def test_constant_matrix_shape_and_dtype(t):
    assert t.shape == tf.TensorShape([2, 3])
    assert t.dtype == tf.float32


@pytest.mark.parametrize("index", ["[:, :1]", "[..., 0:1]"])
def test_indexing_first_column(t, index):
    column = t[:, :1] if index == "[:, :1]" else t[..., 0:1]
    assert column.shape == (2, 1)
    assert_allclose(column, [[1.0], [4.0]])


def test_add_square_and_matmul(t):
    assert_allclose(t + 10, [[11, 12, 13], [14, 15, 16]])
    assert_allclose(tf.square(t), [[1, 4, 9], [16, 25, 36]])
    assert_allclose(t @ tf.transpose(t), T_GRAM)


def test_numpy_interop_both_ways(t):
    a = np.array([2, 4, 5], dtype=np.float32)
    from_numpy = tf.constant(a)
    assert from_numpy.dtype == tf.float32 and from_numpy.shape == (3,)
    back = t.numpy()
    assert isinstance(back, np.ndarray) and back.dtype == np.float32
    assert_allclose(back, T_VALUES)


def test_numpy_array_plus_tensor_is_a_tensor(t):
    a = np.array([2, 4, 5], dtype=np.float32)
    result = a + t
    assert isinstance(result, tf.Tensor)
    assert_allclose(result, [[3, 6, 8], [6, 9, 11]])


def test_no_automatic_casting_between_float16_and_float32():
    with pytest.raises(tf.errors.InvalidArgumentError, match="expected to be a half tensor"):
        tf.constant(2.0, dtype=tf.float16) + tf.constant(2.0, dtype=tf.float32)


def test_cast_fixes_mixed_precision_addition():
    a = tf.constant(2.0, dtype=tf.float16)
    b = tf.constant(2.0, dtype=tf.float32)
    result = a + tf.cast(b, a.dtype)
    assert result.dtype == tf.float16 and float(result) == 4.0


def test_variable_assignments():
    v = tf.Variable(T_VALUES, dtype=tf.float32)
    v.assign(v * 2)
    assert_allclose(v, [[2, 4, 6], [8, 10, 12]])
    v[0, 1].assign(42)
    assert_allclose(v, [[2, 42, 6], [8, 10, 12]])
    v[:, 2].assign([-10.0, -20.0])
    assert_allclose(v, [[2, 42, -10], [8, 10, -20]])


def test_tensor_is_immutable_variable_is_not(t):
    with pytest.raises(TypeError, match="does not support item assignment"):
        t[0, 0] = 5.0


def test_sparse_tensor_round_trips_to_dense():
    s = tf.sparse.SparseTensor(indices=[[0, 1], [1, 0]], values=[1.0, 2.0], dense_shape=[3, 4])
    dense = tf.sparse.to_dense(s)
    assert dense.shape == (3, 4)
    assert float(tf.reduce_sum(dense)) == 3.0 and float(dense[1, 0]) == 2.0


def test_ragged_tensor_row_lengths():
    r = tf.ragged.constant([[1, 2, 3], [4], []])
    assert r.row_lengths().numpy().tolist() == [3, 1, 0]
    assert r.shape.as_list() == [3, None]


def test_string_tensor_lengths_and_unicode():
    s = tf.constant(["café", "tea"])
    assert s.dtype == tf.string
    assert tf.strings.length(s).numpy().tolist() == [5, 3]  # bytes: é is two in UTF-8
    assert tf.strings.length(s, unit="UTF8_CHAR").numpy().tolist() == [4, 3]


def test_set_intersection():
    inter = tf.sets.intersection(tf.constant([[1, 2, 3]]), tf.constant([[2, 3, 4]]))
    assert tf.sparse.to_dense(inter).numpy().tolist() == [[2, 3]]


def test_tensor_array_stacks_same_shape_tensors():
    ta = tf.TensorArray(tf.float32, size=3)
    for i in range(3):
        ta = ta.write(i, tf.fill([2], float(i)))
    stacked = ta.stack()
    assert stacked.shape == (3, 2)
    assert_allclose(stacked, [[0, 0], [1, 1], [2, 2]])


def test_fifo_queue_keeps_order():
    q = tf.queue.FIFOQueue(capacity=3, dtypes=[tf.int32], shapes=[[]])
    q.enqueue_many([[1, 2, 3]])
    assert int(q.size()) == 3
    assert int(q.dequeue()) == 1
    assert q.dequeue_many(2).numpy().tolist() == [2, 3]
