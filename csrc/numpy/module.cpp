// segloss._numpy: the distance transforms and U-Net weight maps for NumPy
// arrays. Links only the torch-free core (no libtorch, no NumPy headers), so
// `segloss.numpy` works where torch is not installed. segloss/numpy.py holds
// the public, documented API and the argument handling; this module checks
// again what would be unsafe to get wrong in C++.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <exception>
#include <mutex>
#include <string>
#include <system_error>
#include <thread>
#include <utility>
#include <vector>

#include "../core/binary_distance.h"
#include "../core/distance_transform.h"
#include "../core/unet_weight.h"

namespace py = pybind11;

namespace segloss::numpy_module {
namespace {

using core::Grid;

// Runs body over [0, count) in up to `threads` contiguous chunks, one
// std::thread each; no thread outlives the call (safe after fork). Where the
// system refuses a thread, the calling thread runs the chunks left.
class ChunkedThreads {
 public:
  explicit ChunkedThreads(int threads) : threads_(threads) {}

  template <typename Body>
  void operator()(int64_t count, Body&& body) const {
    const int64_t workers = std::min<int64_t>(threads_, count);
    if (workers <= 1) {
      body(int64_t(0), count);
      return;
    }
    std::exception_ptr error;
    std::mutex error_mutex;
    auto chunk = [&](int64_t w) {
      try {
        body(count * w / workers, count * (w + 1) / workers);
      } catch (...) {
        std::lock_guard<std::mutex> lock(error_mutex);
        if (!error) error = std::current_exception();
      }
    };
    std::vector<std::thread> pool;
    pool.reserve(workers);
    int64_t started = 0;
    for (; started < workers; ++started) {
      try {
        pool.emplace_back(chunk, started);
      } catch (const std::system_error&) {
        break;  // (a joinable thread must not be destroyed: the rest runs here)
      }
    }
    for (int64_t w = started; w < workers; ++w) chunk(w);
    for (auto& thread : pool) thread.join();
    if (error) std::rethrow_exception(error);
  }

 private:
  int threads_;
};

Grid make_grid(const py::array& array, const std::vector<double>& sampling, const char* name) {
  const int ndim = int(array.ndim());
  if (ndim < 1 || ndim > core::kMaxDistanceDims) {
    throw py::value_error(std::string(name) + " must have 1 to " +
                          std::to_string(core::kMaxDistanceDims) + " dimensions, got " +
                          std::to_string(ndim));
  }
  if (int(sampling.size()) != ndim) {
    throw py::value_error("sampling must have one value per dimension of " + std::string(name) +
                          " (" + std::to_string(ndim) + "), got " +
                          std::to_string(sampling.size()));
  }
  Grid grid;
  grid.ndim = ndim;
  for (int d = 0; d < ndim; ++d) {
    // The bounds keep every squared distance a normal, finite double.
    if (!(sampling[d] >= core::kMinSpacing && sampling[d] <= core::kMaxSpacing)) {
      throw py::value_error("sampling must be positive, between 1e-100 and 1e100, got " +
                            std::to_string(sampling[d]) + " for axis " + std::to_string(d));
    }
    if (array.shape(d) > core::kMaxEnvelopeLine) {
      throw py::value_error(std::string(name) + " axis " + std::to_string(d) + " has " +
                            std::to_string(array.shape(d)) + " pixels; at most " +
                            std::to_string(core::kMaxEnvelopeLine) + " are supported");
    }
    grid.size[d] = array.shape(d);
    grid.spacing[d] = sampling[d];
  }
  return grid;
}

template <typename Label, typename ToId>
core::StridedLabels<Label, ToId> strided_labels(const py::array& array, const char* name,
                                                ToId to_id) {
  core::StridedLabels<Label, ToId> labels{static_cast<const Label*>(array.data()), {}, to_id};
  for (int d = 0; d < array.ndim(); ++d) {
    if (array.strides(d) % py::ssize_t(sizeof(Label)) != 0) {
      throw py::value_error(std::string(name) + " has a stride that is not a multiple of its " +
                            "item size; pass a contiguous copy");
    }
    labels.stride[d] = array.strides(d) / py::ssize_t(sizeof(Label));
  }
  return labels;
}

// Calls fn(Label{}) with the C++ type of an integer (or, if allow_bool, bool)
// array's dtype.
template <typename Fn>
void dispatch_integer(const py::array& array, const char* name, bool allow_bool, Fn&& fn) {
  const char kind = array.dtype().kind();
  const auto size = array.itemsize();
  if (kind == 'i') {
    if (size == 1) return fn(int8_t{});
    if (size == 2) return fn(int16_t{});
    if (size == 4) return fn(int32_t{});
    if (size == 8) return fn(int64_t{});
  } else if (kind == 'u') {
    if (size == 1) return fn(uint8_t{});
    if (size == 2) return fn(uint16_t{});
    if (size == 4) return fn(uint32_t{});
    if (size == 8) return fn(uint64_t{});
  } else if (kind == 'b' && allow_bool) {
    return fn(uint8_t{});  // numpy bools are single bytes, 0 or 1
  }
  throw py::type_error(std::string(name) + " must be an array of integers (any signed or " +
                       "unsigned integer dtype), got dtype " + std::string(py::str(array.dtype())));
}

// NumPy allows arrays whose data is not aligned for their dtype (a uint8
// buffer viewed as int32 from byte 1); reading them through typed pointers is
// undefined behaviour (UBSan: misaligned load), so they are copied.
py::array aligned(const py::array& array) {
  const auto address = reinterpret_cast<std::uintptr_t>(array.data());
  if (array.itemsize() <= 1 || address % array.itemsize() == 0) return array;
  return py::module_::import("numpy").attr("require")(array, py::none(), "A");
}

void check_threads(int threads) {
  if (threads < 1) throw py::value_error("threads must be >= 1, got " + std::to_string(threads));
}

std::vector<py::ssize_t> shape_of(const py::array& array) {
  return std::vector<py::ssize_t>(array.shape(), array.shape() + array.ndim());
}

// Runs the transform of an instance map (GIL released), handing every pixel's
// pair to sink(index, pair).
template <typename Label, typename ToId, typename Sink>
void transform(const py::array& labels, const char* name, ToId to_id, const Grid& grid,
               int threads, const Sink& sink) {
  const auto strided = strided_labels<Label>(labels, name, to_id);
  py::gil_scoped_release release;
  core::two_nearest_squared(strided, grid, ChunkedThreads(threads), sink);
}

// Two arrays of `labels`' shape and `dtype`, the halves of one (2, *shape)
// array: NumPy asks the kernel for huge pages from 4 MiB on, and a pair of
// 512^2 float64 maps then takes 0.2 ms of page faults instead of 1.2 (of a
// 17 ms transform, on the development VM).
std::pair<py::array, py::array> array_pair(const py::dtype& dtype, const py::array& labels) {
  std::vector<py::ssize_t> shape = shape_of(labels);
  shape.insert(shape.begin(), 2);
  const py::array both(dtype, shape);
  return {both[py::int_(0)].cast<py::array>(), both[py::int_(1)].cast<py::array>()};
}

py::tuple two_nearest(const py::array& labels_in, const std::vector<double>& sampling,
                      bool return_labels, int threads) {
  const py::array labels = aligned(labels_in);
  check_threads(threads);
  const Grid grid = make_grid(labels, sampling, "labels");
  const auto d = array_pair(py::dtype::of<double>(), labels);
  py::array_t<double> d1 = d.first, d2 = d.second;
  const auto run = [&](const auto& sink) {
    dispatch_integer(labels, "labels", /*allow_bool=*/false, [&](auto label_type) {
      transform<decltype(label_type)>(labels, "labels", core::LabelIsId{}, grid, threads, sink);
    });
  };
  if (!return_labels) {
    run(core::TwoNearestOutputs<false>{d1.mutable_data(), d2.mutable_data()});
    return py::make_tuple(d1, d2);
  }
  auto [l1, l2] = array_pair(labels.dtype(), labels);
  run(core::TwoNearestOutputs<true>{d1.mutable_data(), d2.mutable_data(), l1.mutable_data(),
                                    l2.mutable_data(), int(labels.itemsize())});
  return py::make_tuple(d1, d2, l1, l2);
}

// scipy.ndimage.distance_transform_edt on an input without zeros measures to
// a phantom feature at index (-1, 0, ..., 0) (an artifact of its feature
// transform); reproduced so that the results stay identical.
void phantom_feature_distances(const Grid& grid, double* out) {
  const int64_t n = grid.numel();
  for (int64_t i = 0; i < n; ++i) {
    int64_t index[core::kMaxDistanceDims];
    int64_t rest = i;
    for (int d = grid.ndim - 1; d >= 0; --d) {
      index[d] = rest % grid.size[d];
      rest /= grid.size[d];
    }
    double sum = 0;
    for (int d = 0; d < grid.ndim; ++d) {
      const double offset = grid.spacing[d] * double(index[d] + (d == 0 ? 1 : 0));
      sum += offset * offset;
    }
    out[i] = std::sqrt(sum);
  }
}

// The plain transform's sink: the distance on the foreground, 0 on the
// background (its states there are negative). One type for every input type,
// so that the later passes are compiled once for it.
struct EdtOutput {
  double* out;
  void operator()(int64_t i, double state) const { out[i] = state > 0 ? std::sqrt(state) : 0.0; }
};

// Runs the binary transform of `input` (GIL released), handing every pixel's
// signed state to sink(index, state); returns the foreground pixel count.
template <typename Value, typename Sink>
int64_t binary_transform(const py::array& input, const Grid& grid, core::DistanceTarget target,
                         int threads, const Sink& sink) {
  const auto mask = strided_labels<Value>(input, "input", core::NonzeroIsForeground{});
  py::gil_scoped_release release;
  return core::binary_distance(mask, grid, target, ChunkedThreads(threads), sink);
}

py::array_t<double> distance_transform_edt(const py::array& input_in,
                                           const std::vector<double>& sampling, int threads) {
  const py::array input = aligned(input_in);
  check_threads(threads);
  const Grid grid = make_grid(input, sampling, "input");
  py::array_t<double> distances(shape_of(input));
  double* out = distances.mutable_data();
  dispatch_integer(input, "input", /*allow_bool=*/true, [&](auto value_type) {
    const int64_t foreground = binary_transform<decltype(value_type)>(
        input, grid, core::DistanceTarget::kZeros, threads, EdtOutput{out});
    if (grid.numel() > 0 && foreground == grid.numel()) phantom_feature_distances(grid, out);
  });
  return distances;
}

// The signed ("signed") or two-sided ("boundary") distance map of a mask,
// float64; 0 where the mask lacks either class.
py::array_t<double> distance_map(const py::array& input_in, const std::string& kind,
                                 const std::vector<double>& sampling, int threads) {
  if (kind != "signed" && kind != "boundary") {
    throw py::value_error("kind must be 'signed' or 'boundary', got '" + kind + "'");
  }
  const core::DistanceMap map =
      kind == "signed" ? core::DistanceMap::kSigned : core::DistanceMap::kBoundary;
  const py::array input = aligned(input_in);
  check_threads(threads);
  const Grid grid = make_grid(input, sampling, "input");
  py::array_t<double> result(shape_of(input));
  double* out = result.mutable_data();
  dispatch_integer(input, "input", /*allow_bool=*/true, [&](auto value_type) {
    const int64_t foreground = core::with_map_output(map, out, [&](const auto& sink) {
      return binary_transform<decltype(value_type)>(input, grid,
                                                    core::DistanceTarget::kOtherClass, threads,
                                                    sink);
    });
    if (!core::has_both_classes(foreground, grid.numel())) {
      std::fill(out, out + grid.numel(), 0.0);
    }
  });
  return result;
}

// w_c is background_weight / foreground_weight by pixel class, or balanced
// (core::balanced_class_weights), or, if given, pixel_weights (float32, C
// order, the labels' shape).
py::array_t<float> unet_weight_map(const py::array& labels_in, const std::vector<double>& sampling,
                                   double w0, double sigma, bool border_everywhere,
                                   double background_weight, double foreground_weight,
                                   bool balanced, const std::optional<py::array>& pixel_weights,
                                   int threads) {
  check_threads(threads);
  if (!(std::isfinite(sigma) && sigma > 0)) {
    throw py::value_error("sigma must be positive and finite, got " + std::to_string(sigma));
  }
  if (!std::isfinite(w0)) throw py::value_error("w0 must be finite, got " + std::to_string(w0));
  const py::array labels = aligned(labels_in);
  const Grid grid = make_grid(labels, sampling, "labels");
  const float* weights = nullptr;
  py::array w;  // pixel_weights or its aligned copy, alive until the end
  if (pixel_weights) {
    w = aligned(*pixel_weights);
    if (!py::isinstance<py::array_t<float>>(w) || !(w.flags() & py::array::c_style) ||
        shape_of(w) != shape_of(labels)) {
      throw py::value_error("pixel weights must be a C-contiguous float32 array of the labels' "
                            "shape");
    }
    weights = static_cast<const float*>(w.data());
  }
  py::array_t<float> result(shape_of(labels));
  const core::UnetWeightParams params = core::unet_weight_params(w0, sigma, border_everywhere);
  dispatch_integer(labels, "labels", /*allow_bool=*/false, [&](auto label_type) {
    using Label = decltype(label_type);
    core::ClassWeights class_weights{background_weight, foreground_weight};
    if (balanced) {
      const auto strided = strided_labels<Label>(labels, "labels", core::LabelIsId{});
      class_weights =
          core::balanced_class_weights(grid.numel(), core::count_instance_pixels(strided, grid));
    }
    transform<Label>(labels, "labels", core::LabelIsId{}, grid, threads,
                     core::UnetWeightOutput{result.mutable_data(), weights, class_weights,
                                            params});
  });
  return result;
}

}  // namespace
}  // namespace segloss::numpy_module

PYBIND11_MODULE(_numpy, m) {
  using namespace segloss::numpy_module;
  m.doc() = "segloss's NumPy kernels (torch-free); use segloss.numpy.";
  m.def("two_nearest", &two_nearest, py::arg("labels"), py::arg("sampling"),
        py::arg("return_labels"), py::arg("threads"));
  m.def("distance_transform_edt", &distance_transform_edt, py::arg("input"), py::arg("sampling"),
        py::arg("threads"));
  m.def("distance_map", &distance_map, py::arg("input"), py::arg("kind"), py::arg("sampling"),
        py::arg("threads"));
  m.def("unet_weight_map", &unet_weight_map, py::arg("labels"), py::arg("sampling"),
        py::arg("w0"), py::arg("sigma"), py::arg("border_everywhere"),
        py::arg("background_weight"), py::arg("foreground_weight"), py::arg("balanced"),
        py::arg("pixel_weights"), py::arg("threads"));
}
