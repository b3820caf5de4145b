// Under autocast the loss ops compute in float32, like PyTorch's own losses:
// every floating-point tensor argument is cast to float32 and the op runs
// below the autocast keys.
#include <ATen/autocast_mode.h>
#include <torch/library.h>

#include "cross_entropy_operands.h"
#include "pointwise_operands.h"

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

constexpr char kPointwise[] = "segloss::_pointwise_loss";
using DiceCeSignature = at::Tensor(const at::Tensor&, const at::Tensor&, std::string_view,
                                   double, double, double, bool, bool,
                                   const std::optional<at::Tensor>&, std::optional<int64_t>,
                                   const std::optional<at::Tensor>&, double, double,
                                   std::string_view, const std::optional<at::Tensor>&, double);

using DiceFocalSignature =
    at::Tensor(const at::Tensor&, const at::Tensor&, std::string_view, double, double, double,
               bool, bool, const std::optional<at::Tensor>&, std::optional<int64_t>,
               const std::optional<at::Tensor>&, std::string_view, double, std::optional<double>,
               double, double, std::optional<std::string_view>);

constexpr char kDice[] = "segloss::dice_loss";
constexpr char kJaccard[] = "segloss::jaccard_loss";
constexpr char kLogCoshDice[] = "segloss::log_cosh_dice_loss";
constexpr char kTversky[] = "segloss::tversky_loss";
constexpr char kGeneralizedDice[] = "segloss::generalized_dice_loss";
constexpr char kCrossEntropy[] = "segloss::_weighted_cross_entropy";
constexpr char kDiceCe[] = "segloss::dice_ce_loss";
constexpr char kDiceFocal[] = "segloss::dice_focal_loss";

// Every loss op at the autocast key kKey of device kDevice.
template <c10::DispatchKey kKey, c10::DeviceType kDevice>
void register_float32_autocast(torch::Library& m) {
  using Pointwise = Float32Autocast<kKey, kDevice, PointwiseLossSignature>;
  using Dice = Float32Autocast<kKey, kDevice, DiceSignature>;
  using Tversky = Float32Autocast<kKey, kDevice, TverskySignature>;
  using GeneralizedDice = Float32Autocast<kKey, kDevice, GeneralizedDiceSignature>;
  using DiceCe = Float32Autocast<kKey, kDevice, DiceCeSignature>;
  using DiceFocal = Float32Autocast<kKey, kDevice, DiceFocalSignature>;
  using CrossEntropy = Float32Autocast<kKey, kDevice, WeightedCrossEntropySignature>;
  // Every pointwise loss, the BCE ops included (composites of it).
  m.impl("_pointwise_loss", &Pointwise::template call<kPointwise>);
  m.impl("dice_loss", &Dice::template call<kDice>);
  m.impl("jaccard_loss", &Dice::template call<kJaccard>);
  m.impl("log_cosh_dice_loss", &Dice::template call<kLogCoshDice>);
  m.impl("tversky_loss", &Tversky::template call<kTversky>);
  m.impl("generalized_dice_loss", &GeneralizedDice::template call<kGeneralizedDice>);
  m.impl("dice_ce_loss", &DiceCe::template call<kDiceCe>);
  m.impl("dice_focal_loss", &DiceFocal::template call<kDiceFocal>);
  m.impl("_weighted_cross_entropy", &CrossEntropy::template call<kCrossEntropy>);
}

}  // namespace

TORCH_LIBRARY_IMPL(segloss, AutocastCPU, m) {
  register_float32_autocast<c10::DispatchKey::AutocastCPU, c10::DeviceType::CPU>(m);
}

TORCH_LIBRARY_IMPL(segloss, AutocastCUDA, m) {
  register_float32_autocast<c10::DispatchKey::AutocastCUDA, c10::DeviceType::CUDA>(m);
}

}  // namespace segloss::ops
