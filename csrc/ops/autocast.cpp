// Under autocast the loss ops compute in float32, like PyTorch's own losses:
// every floating-point tensor argument is cast to float32 and the op runs
// below the autocast keys.
#include <ATen/autocast_mode.h>
#include <torch/library.h>

#include "cross_entropy_operands.h"

namespace segloss::ops {
namespace {

template <c10::DispatchKey kAutocastKey, c10::DeviceType kDevice, class Op>
struct Float32Autocast;

template <c10::DispatchKey kAutocastKey, c10::DeviceType kDevice, class Ret, class... Args>
struct Float32Autocast<kAutocastKey, kDevice, Ret(Args...)> {
  template <const char* kOpName>
  static Ret call(Args... args) {
    c10::impl::ExcludeDispatchKeyGuard no_autocast(kAutocastKey);
    static auto op =
        c10::Dispatcher::singleton().findSchemaOrThrow(kOpName, "").template typed<Ret(Args...)>();
    return op.call(at::autocast::cached_cast(at::kFloat, args, kDevice)...);
  }
};

using LossSignature = at::Tensor(const at::Tensor&, const at::Tensor&,
                                 const std::optional<at::Tensor>&,
                                 const std::optional<at::Tensor>&, std::string_view);

// dice_loss, jaccard_loss, log_cosh_dice_loss; Tversky's alpha, beta and
// focal_gamma, and generalized Dice's w_type, take gamma's place.
using DiceSignature = at::Tensor(const at::Tensor&, const at::Tensor&, std::string_view, double,
                                 double, double, bool, bool, const std::optional<at::Tensor>&,
                                 std::optional<int64_t>, const std::optional<at::Tensor>&,
                                 std::string_view, bool);
using TverskySignature = at::Tensor(const at::Tensor&, const at::Tensor&, std::string_view,
                                    double, double, double, double, double, bool, bool,
                                    const std::optional<at::Tensor>&, std::optional<int64_t>,
                                    const std::optional<at::Tensor>&, std::string_view, bool);
using GeneralizedDiceSignature =
    at::Tensor(const at::Tensor&, const at::Tensor&, std::string_view, std::string_view, double,
               double, bool, bool, const std::optional<at::Tensor>&, std::optional<int64_t>,
               const std::optional<at::Tensor>&, std::string_view, bool);

constexpr char kBce[] = "segloss::binary_cross_entropy";
constexpr char kBceWithLogits[] = "segloss::binary_cross_entropy_with_logits";
using DiceCeSignature = at::Tensor(const at::Tensor&, const at::Tensor&, std::string_view,
                                   double, double, double, bool, bool,
                                   const std::optional<at::Tensor>&, std::optional<int64_t>,
                                   const std::optional<at::Tensor>&, double, double,
                                   std::string_view, const std::optional<at::Tensor>&);

constexpr char kDice[] = "segloss::dice_loss";
constexpr char kJaccard[] = "segloss::jaccard_loss";
constexpr char kLogCoshDice[] = "segloss::log_cosh_dice_loss";
constexpr char kTversky[] = "segloss::tversky_loss";
constexpr char kGeneralizedDice[] = "segloss::generalized_dice_loss";
constexpr char kCrossEntropy[] = "segloss::_weighted_cross_entropy";
constexpr char kDiceCe[] = "segloss::dice_ce_loss";

template <c10::DispatchKey kKey, c10::DeviceType kDevice>
using LossAutocast = Float32Autocast<kKey, kDevice, LossSignature>;
template <c10::DispatchKey kKey, c10::DeviceType kDevice>
using DiceAutocast = Float32Autocast<kKey, kDevice, DiceSignature>;
template <c10::DispatchKey kKey, c10::DeviceType kDevice>
using TverskyAutocast = Float32Autocast<kKey, kDevice, TverskySignature>;
template <c10::DispatchKey kKey, c10::DeviceType kDevice>
using GeneralizedDiceAutocast = Float32Autocast<kKey, kDevice, GeneralizedDiceSignature>;
template <c10::DispatchKey kKey, c10::DeviceType kDevice>
using DiceCeAutocast = Float32Autocast<kKey, kDevice, DiceCeSignature>;
template <c10::DispatchKey kKey, c10::DeviceType kDevice>
using CrossEntropyAutocast = Float32Autocast<kKey, kDevice, WeightedCrossEntropySignature>;

}  // namespace

TORCH_LIBRARY_IMPL(segloss, AutocastCPU, m) {
  using Cast = LossAutocast<c10::DispatchKey::AutocastCPU, c10::DeviceType::CPU>;
  m.impl("binary_cross_entropy", &Cast::call<kBce>);
  m.impl("binary_cross_entropy_with_logits", &Cast::call<kBceWithLogits>);
  m.impl("dice_loss",
         &DiceAutocast<c10::DispatchKey::AutocastCPU, c10::DeviceType::CPU>::call<kDice>);
  m.impl("jaccard_loss",
         &DiceAutocast<c10::DispatchKey::AutocastCPU, c10::DeviceType::CPU>::call<kJaccard>);
  m.impl("log_cosh_dice_loss",
         &DiceAutocast<c10::DispatchKey::AutocastCPU, c10::DeviceType::CPU>::call<kLogCoshDice>);
  m.impl("tversky_loss",
         &TverskyAutocast<c10::DispatchKey::AutocastCPU, c10::DeviceType::CPU>::call<kTversky>);
  m.impl("generalized_dice_loss",
         &GeneralizedDiceAutocast<c10::DispatchKey::AutocastCPU,
                                  c10::DeviceType::CPU>::call<kGeneralizedDice>);
  m.impl("dice_ce_loss",
         &DiceCeAutocast<c10::DispatchKey::AutocastCPU, c10::DeviceType::CPU>::call<kDiceCe>);
  m.impl("_weighted_cross_entropy",
         &CrossEntropyAutocast<c10::DispatchKey::AutocastCPU,
                               c10::DeviceType::CPU>::call<kCrossEntropy>);
}

TORCH_LIBRARY_IMPL(segloss, AutocastCUDA, m) {
  using Cast = LossAutocast<c10::DispatchKey::AutocastCUDA, c10::DeviceType::CUDA>;
  m.impl("binary_cross_entropy", &Cast::call<kBce>);
  m.impl("binary_cross_entropy_with_logits", &Cast::call<kBceWithLogits>);
  m.impl("dice_loss",
         &DiceAutocast<c10::DispatchKey::AutocastCUDA, c10::DeviceType::CUDA>::call<kDice>);
  m.impl("jaccard_loss",
         &DiceAutocast<c10::DispatchKey::AutocastCUDA, c10::DeviceType::CUDA>::call<kJaccard>);
  m.impl("log_cosh_dice_loss",
         &DiceAutocast<c10::DispatchKey::AutocastCUDA, c10::DeviceType::CUDA>::call<kLogCoshDice>);
  m.impl("tversky_loss",
         &TverskyAutocast<c10::DispatchKey::AutocastCUDA, c10::DeviceType::CUDA>::call<kTversky>);
  m.impl("generalized_dice_loss",
         &GeneralizedDiceAutocast<c10::DispatchKey::AutocastCUDA,
                                  c10::DeviceType::CUDA>::call<kGeneralizedDice>);
  m.impl("dice_ce_loss",
         &DiceCeAutocast<c10::DispatchKey::AutocastCUDA, c10::DeviceType::CUDA>::call<kDiceCe>);
  m.impl("_weighted_cross_entropy",
         &CrossEntropyAutocast<c10::DispatchKey::AutocastCUDA,
                               c10::DeviceType::CUDA>::call<kCrossEntropy>);
}

}  // namespace segloss::ops
