// Python bindings of the CUDA kernels (the kernels live in the .cu files).
#include <torch/extension.h>

namespace videdit {
torch::Tensor upfirdn2d_cuda(torch::Tensor x, torch::Tensor f, int upx, int upy, int downx, int downy, int padx0,
                             int pady0, int out_h, int out_w);
torch::Tensor bias_act_cuda(torch::Tensor x, torch::Tensor b, int act, double alpha, double gain, double clamp,
                            long long inner);
torch::Tensor bias_act_backward_cuda(torch::Tensor dy, torch::Tensor x, torch::Tensor b, int act, double alpha,
                                     double gain, double clamp, long long inner);
torch::Tensor filtered_lrelu_cuda(torch::Tensor x, torch::Tensor b, torch::Tensor fu, torch::Tensor fd, int up,
                                  int down, int padx0, int pady0, int mid_h, int mid_w, int out_h, int out_w,
                                  double gain, double slope, double clamp);
torch::Tensor filtered_lrelu_backward_cuda(torch::Tensor dy, torch::Tensor x, torch::Tensor b, torch::Tensor fu,
                                           torch::Tensor fd, torch::Tensor fu_t, torch::Tensor fd_t, int up, int down,
                                           int padx0, int pady0, int mid_h, int mid_w, double gain, double slope,
                                           double clamp);
}  // namespace videdit

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.def("upfirdn2d", &videdit::upfirdn2d_cuda, "upfirdn2d (CUDA)");
  m.def("bias_act", &videdit::bias_act_cuda, "bias_act forward (CUDA)");
  m.def("bias_act_backward", &videdit::bias_act_backward_cuda, "bias_act backward (CUDA)");
  m.def("filtered_lrelu", &videdit::filtered_lrelu_cuda, "fused filtered_lrelu forward (CUDA)");
  m.def("filtered_lrelu_backward", &videdit::filtered_lrelu_backward_cuda, "fused filtered_lrelu backward (CUDA)");
}
