// edge_runner: run a splitc TVM half (edge.so) with TVM's C++ runtime, no Python.
//
//   edge_runner edge.so INPUT OUTPUT [SHAPE]
//
// INPUT is a float32 .npy file, or raw little-endian float32 with SHAPE given
// as 1x3x32x32. The half's first output (the cut tensor for a one-tensor cut)
// is written to OUTPUT: as .npy when the name ends in .npy, else raw bytes.
// Only the tvm-ffi headers are needed; link with libtvm_runtime and libtvm_ffi.

#include <tvm/ffi/any.h>
#include <tvm/ffi/container/array.h>
#include <tvm/ffi/container/tensor.h>
#include <tvm/ffi/extra/module.h>
#include <tvm/ffi/function.h>

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <iostream>
#include <sstream>
#include <stdexcept>
#include <string>
#include <vector>

namespace ffi = tvm::ffi;

namespace {

// 64-byte aligned host memory: TVM's kernels assume aligned buffers.
struct AlignedCPUAlloc {
  void AllocData(DLTensor* tensor) {
    size_t bytes = (ffi::GetDataSize(*tensor) + 63) / 64 * 64;
    tensor->data = std::aligned_alloc(64, bytes ? bytes : 64);
  }
  void FreeData(DLTensor* tensor) { std::free(tensor->data); }
};

struct Array {
  std::vector<int64_t> shape;
  std::vector<float> data;
};

std::string ReadFile(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw std::runtime_error("cannot open " + path);
  std::ostringstream bytes;
  bytes << in.rdbuf();
  return bytes.str();
}

bool EndsWith(const std::string& text, const std::string& suffix) {
  return text.size() >= suffix.size() && text.compare(text.size() - suffix.size(), suffix.size(), suffix) == 0;
}

std::vector<int64_t> ParseShape(const std::string& text, char separator) {
  std::vector<int64_t> shape;
  std::stringstream parts(text);
  std::string part;
  while (std::getline(parts, part, separator)) {
    if (part.find_first_of("0123456789") != std::string::npos) shape.push_back(std::stoll(part));
  }
  return shape;
}

// A version 1/2/3 .npy file holding little-endian float32 in C order.
Array ReadNpy(const std::string& bytes) {
  if (bytes.compare(0, 6, "\x93NUMPY") != 0) throw std::runtime_error("not a .npy file");
  size_t header_len = bytes[6] == 1 ? static_cast<uint8_t>(bytes[8]) | static_cast<uint8_t>(bytes[9]) << 8
                                    : *reinterpret_cast<const uint32_t*>(&bytes[8]);
  size_t start = bytes[6] == 1 ? 10 : 12;
  std::string header = bytes.substr(start, header_len);
  if (header.find("'<f4'") == std::string::npos || header.find("'fortran_order': False") == std::string::npos) {
    throw std::runtime_error("the .npy file must hold C-ordered float32 ('<f4')");
  }
  size_t open = header.find('(', header.find("'shape'")), close = header.find(')', open);
  Array array{ParseShape(header.substr(open + 1, close - open - 1), ','), {}};
  array.data.resize((bytes.size() - start - header_len) / sizeof(float));
  std::memcpy(array.data.data(), bytes.data() + start + header_len, array.data.size() * sizeof(float));
  return array;
}

Array ReadInput(const std::string& path, const std::string& shape) {
  std::string bytes = ReadFile(path);
  if (EndsWith(path, ".npy")) return ReadNpy(bytes);
  if (shape.empty()) throw std::runtime_error("a raw float32 input needs its SHAPE, e.g. 1x3x32x32");
  Array array{ParseShape(shape, 'x'), std::vector<float>(bytes.size() / sizeof(float))};
  std::memcpy(array.data.data(), bytes.data(), array.data.size() * sizeof(float));
  return array;
}

void WriteOutput(const std::string& path, const ffi::Tensor& tensor) {
  std::ofstream out(path, std::ios::binary);
  const DLTensor* dl = tensor.GetDLTensorPtr();
  if (EndsWith(path, ".npy")) {
    if (dl->dtype.code != kDLFloat || dl->dtype.bits != 32) throw std::runtime_error(".npy output is float32 only");
    std::string shape;
    for (int i = 0; i < dl->ndim; ++i) {
      shape += std::to_string(dl->shape[i]) + (dl->ndim == 1 ? "," : (i + 1 < dl->ndim ? ", " : ""));
    }
    std::string header = "{'descr': '<f4', 'fortran_order': False, 'shape': (" + shape + "), }";
    header.append(63 - (10 + header.size()) % 64, ' ').push_back('\n');
    uint16_t length = static_cast<uint16_t>(header.size());
    out.write("\x93NUMPY\x01\x00", 8);
    out.write(reinterpret_cast<const char*>(&length), 2);
    out << header;
  }
  out.write(static_cast<const char*>(dl->data) + dl->byte_offset, ffi::GetDataSize(*dl));
}

ffi::Function Get(const ffi::Module& module, const char* name) {
  auto function = module->GetFunction(name);
  if (!function.has_value()) throw std::runtime_error(std::string("the module has no function ") + name);
  return *function;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc < 4) {
    std::cerr << "usage: " << argv[0] << " edge.so INPUT(.npy|.bin) OUTPUT(.npy|.bin) [SHAPE like 1x3x32x32]\n";
    return 2;
  }
  try {
    Array input = ReadInput(argv[2], argc > 4 ? argv[4] : "");
    ffi::Module library = ffi::Module::LoadFromFile(argv[1]);
    ffi::Module vm = Get(library, "vm_load_executable")().cast<ffi::Module>();
    const int kPooledAllocator = 2;
    Get(vm, "vm_initialization")(static_cast<int>(kDLCPU), 0, kPooledAllocator);

    DLDevice cpu{kDLCPU, 0};
    ffi::Tensor x = ffi::Tensor::FromNDAlloc(AlignedCPUAlloc(), ffi::ShapeView(input.shape.data(), input.shape.size()),
                                             DLDataType{kDLFloat, 32, 1}, cpu);
    std::memcpy(x.data_ptr(), input.data.data(), input.data.size() * sizeof(float));
    ffi::Any result = Get(vm, "main")(x);

    auto tensor = result.as<ffi::Tensor>();
    ffi::Tensor first = tensor ? *tensor : result.cast<ffi::Array<ffi::Any>>()[0].cast<ffi::Tensor>();
    WriteOutput(argv[3], first);
    std::cout << "wrote " << argv[3] << " (" << ffi::GetDataSize(first) << " bytes)\n";
  } catch (const std::exception& error) {
    std::cerr << "edge_runner: " << error.what() << "\n";
    return 1;
  }
  return 0;
}
