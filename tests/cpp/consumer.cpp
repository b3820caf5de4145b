// Runs a TorchScript model whose forward calls segloss losses, from C++ alone:
// the ops are registered because the program links segloss::segloss.
//
//   segloss_consumer MODEL.pt
//
// The model holds its example input (the buffer `example_input`). Prints the
// segloss ops registered at start, the loss of forward(example_input) and the
// norm of its gradient with respect to the input (after backward).
#include <torch/script.h>

#include <iomanip>
#include <iostream>
#include <string>

int main(int argc, char** argv) {
  if (argc != 2) {
    std::cerr << "usage: segloss_consumer MODEL.pt\n";
    return 2;
  }
  for (const c10::OperatorName& name : c10::Dispatcher::singleton().getAllOpNames()) {
    if (name.name.rfind("segloss::", 0) == 0) std::cout << "op " << name.name << "\n";
  }
  torch::jit::Module model = torch::jit::load(argv[1]);
  const at::Tensor input =
      model.attr("example_input").toTensor().detach().clone().requires_grad_(true);
  const at::Tensor loss = model.forward({input}).toTensor();
  loss.backward();
  std::cout << std::setprecision(17) << "loss " << loss.item<double>() << "\n"
            << "grad_norm " << input.grad().norm().item<double>() << "\n";
  return 0;
}
