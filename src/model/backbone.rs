//! insightface's IResNet ("improved" ResNet for 112x112 faces), generic over the backend.
//!
//! The layout follows insightface's `backbones/iresnet.py`: a 3x3 stem at full resolution, four
//! stages whose first block halves the resolution, pre-activation-style blocks without an
//! activation after the residual add, and an output block that flattens the last feature map
//! into a fully connected layer followed by BatchNorm1d.

use burn::module::Initializer;
use burn::nn::conv::{Conv2d, Conv2dConfig};
use burn::nn::{Dropout, DropoutConfig, Linear, LinearConfig, PaddingConfig2d};
use burn::prelude::*;

use crate::backend::conv::{conv2d, ConvBackend};
use crate::model::activation::{PRelu, PReluConfig};
use crate::model::norm::{BatchNorm, BatchNormConfig};
use crate::util::error::ConfigError;

/// BatchNorm epsilon of every IResNet normalisation (insightface uses 1e-5 throughout).
pub const BN_EPS: f64 = 1e-5;

/// Configuration of an [`IResNet`] backbone.
///
/// Presets: [`IResNetConfig::r18`], [`r34`](IResNetConfig::r34), [`r50`](IResNetConfig::r50),
/// [`r100`](IResNetConfig::r100) (insightface's), and the CPU-sized
/// [`tiny`](IResNetConfig::tiny) and [`small`](IResNetConfig::small).
#[derive(Config, Debug, PartialEq)]
pub struct IResNetConfig {
    /// Residual blocks per stage (`[3, 13, 30, 3]` for r100).
    pub blocks: Vec<usize>,
    /// Output channels per stage (`[64, 128, 256, 512]` for the presets).
    pub widths: Vec<usize>,
    /// Channels of the stem convolution (64 for the presets).
    #[config(default = 64)]
    pub stem_width: usize,
    /// Side of the square input image, divisible by `2^stages`.
    #[config(default = 112)]
    pub input_side: usize,
    /// Width of the output feature (512 for ArcFace, the shared width S for GroupFace).
    #[config(default = 512)]
    pub output_width: usize,
    /// Dropout before the output FC (insightface's default 0).
    #[config(default = 0.0)]
    pub dropout: f64,
}

impl IResNetConfig {
    fn preset(blocks: [usize; 4]) -> Self {
        Self::new(blocks.to_vec(), vec![64, 128, 256, 512])
    }

    /// insightface r18: blocks `[2, 2, 2, 2]`.
    pub fn r18() -> Self {
        Self::preset([2, 2, 2, 2])
    }

    /// insightface r34: blocks `[3, 4, 6, 3]`.
    pub fn r34() -> Self {
        Self::preset([3, 4, 6, 3])
    }

    /// insightface r50: blocks `[3, 4, 14, 3]`.
    pub fn r50() -> Self {
        Self::preset([3, 4, 14, 3])
    }

    /// insightface r100: blocks `[3, 13, 30, 3]`.
    pub fn r100() -> Self {
        Self::preset([3, 13, 30, 3])
    }

    /// A CPU-sized backbone: one block per stage, widths 16..128, 32x32 input.
    pub fn tiny() -> Self {
        Self::new(vec![1, 1, 1, 1], vec![16, 32, 64, 128])
            .with_stem_width(16)
            .with_input_side(32)
            .with_output_width(128)
    }

    /// A larger CPU/GPU preset: r18's blocks at half width on 64x64 input.
    pub fn small() -> Self {
        Self::new(vec![2, 2, 2, 2], vec![32, 64, 128, 256])
            .with_stem_width(32)
            .with_input_side(64)
            .with_output_width(256)
    }

    /// A preset by name: `r18`, `r34`, `r50`, `r100`, `tiny`, `small`.
    pub fn by_name(name: &str) -> Option<Self> {
        match name {
            "r18" => Some(Self::r18()),
            "r34" => Some(Self::r34()),
            "r50" => Some(Self::r50()),
            "r100" => Some(Self::r100()),
            "tiny" => Some(Self::tiny()),
            "small" => Some(Self::small()),
            _ => None,
        }
    }

    /// Names accepted by [`by_name`](Self::by_name).
    pub const PRESETS: &'static str = "r18|r34|r50|r100|tiny|small";

    /// Side of the last feature map (`input_side / 2^stages`).
    pub fn final_side(&self) -> usize {
        self.input_side >> self.blocks.len()
    }

    /// Checks every field; the error names the field and what is expected.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let field = |field: &str, expected: String, found: String| {
            Err(ConfigError::new(format!("backbone.{field}"), expected, found))
        };
        if self.blocks.is_empty() || self.blocks.contains(&0) {
            return field(
                "blocks",
                "one or more stages, each >= 1 block".into(),
                format!("{:?}", self.blocks),
            );
        }
        if self.widths.len() != self.blocks.len() {
            return field(
                "widths",
                format!("one width per stage ({} stages)", self.blocks.len()),
                format!("{:?}", self.widths),
            );
        }
        if self.widths.contains(&0) || self.stem_width == 0 || self.output_width == 0 {
            return field("widths", "positive widths".into(), format!("{:?}", self.widths));
        }
        let divisor = 1usize << self.blocks.len();
        if self.input_side == 0 || !self.input_side.is_multiple_of(divisor) {
            return field(
                "input_side",
                format!("a positive multiple of {divisor} (2^stages)"),
                self.input_side.to_string(),
            );
        }
        if !(0.0..1.0).contains(&self.dropout) {
            return field("dropout", "a probability in [0, 1)".into(), self.dropout.to_string());
        }
        Ok(())
    }

    /// Builds the backbone. Call [`validate`](Self::validate) first for a readable error.
    pub fn init<B: Backend>(&self, device: &B::Device) -> IResNet<B> {
        let stem = conv3x3(3, self.stem_width, 1).init(device);
        let stem_bn = bn(self.stem_width).init(device);
        let stem_act = prelu(self.stem_width).init(device);
        let mut blocks = Vec::new();
        let mut input = self.stem_width;
        for (&count, &width) in self.blocks.iter().zip(&self.widths) {
            for i in 0..count {
                let stride = if i == 0 { 2 } else { 1 };
                blocks.push(IBasicBlockConfig::new(input, width, stride).init(device));
                input = width;
            }
        }
        let side = self.final_side();
        IResNet {
            stem,
            stem_bn,
            stem_act,
            blocks,
            out_bn: bn(input).init(device),
            dropout: DropoutConfig::new(self.dropout).init(),
            fc: LinearConfig::new(input * side * side, self.output_width).init(device),
            features: bn(self.output_width).init(device),
        }
    }
}

fn bn(channels: usize) -> BatchNormConfig {
    BatchNormConfig::new(channels).with_epsilon(BN_EPS)
}

fn prelu(channels: usize) -> PReluConfig {
    PReluConfig::new().with_num_parameters(channels)
}

/// insightface initialises convolutions from N(0, 0.1).
fn conv_init() -> Initializer {
    Initializer::Normal { mean: 0.0, std: 0.1 }
}

fn conv3x3(input: usize, output: usize, stride: usize) -> Conv2dConfig {
    Conv2dConfig::new([input, output], [3, 3])
        .with_stride([stride, stride])
        .with_padding(PaddingConfig2d::Explicit(1, 1, 1, 1))
        .with_bias(false)
        .with_initializer(conv_init())
}

/// Configuration of one [`IBasicBlock`].
#[derive(Config, Debug)]
pub struct IBasicBlockConfig {
    /// Input channels.
    pub input: usize,
    /// Output channels.
    pub output: usize,
    /// Stride of the second convolution (2 at the start of a stage).
    pub stride: usize,
}

impl IBasicBlockConfig {
    /// Builds the block; a shortcut projection is added when the shape changes.
    pub fn init<B: Backend>(&self, device: &B::Device) -> IBasicBlock<B> {
        let downsample = (self.stride != 1 || self.input != self.output).then(|| Downsample {
            conv: Conv2dConfig::new([self.input, self.output], [1, 1])
                .with_stride([self.stride, self.stride])
                .with_bias(false)
                .with_initializer(conv_init())
                .init(device),
            bn: bn(self.output).init(device),
        });
        IBasicBlock {
            bn1: bn(self.input).init(device),
            conv1: conv3x3(self.input, self.output, 1).init(device),
            bn2: bn(self.output).init(device),
            act: prelu(self.output).init(device),
            conv2: conv3x3(self.output, self.output, self.stride).init(device),
            bn3: bn(self.output).init(device),
            downsample,
        }
    }
}

/// The 1x1 projection shortcut of a block that changes shape.
#[derive(Module, Debug)]
pub struct Downsample<B: Backend> {
    /// 1x1 convolution with the block's stride, no bias.
    pub conv: Conv2d<B>,
    /// BatchNorm2d after it.
    pub bn: BatchNorm<B>,
}

/// insightface's `IBasicBlock`: BN, conv3x3, BN, PReLU, conv3x3(stride), BN, plus shortcut.
#[derive(Module, Debug)]
pub struct IBasicBlock<B: Backend> {
    /// BatchNorm on the input.
    pub bn1: BatchNorm<B>,
    /// First 3x3 convolution (stride 1).
    pub conv1: Conv2d<B>,
    /// BatchNorm after `conv1`.
    pub bn2: BatchNorm<B>,
    /// Per-channel PReLU.
    pub act: PRelu<B>,
    /// Second 3x3 convolution, carries the stride.
    pub conv2: Conv2d<B>,
    /// BatchNorm after `conv2`.
    pub bn3: BatchNorm<B>,
    /// Projection shortcut, present when the block changes shape.
    pub downsample: Option<Downsample<B>>,
}

impl<B: ConvBackend> IBasicBlock<B> {
    /// # Shapes
    /// - `x`: `[batch, input, h, w]`
    /// - output: `[batch, output, h / stride, w / stride]`
    pub fn forward(&self, x: Tensor<B, 4>) -> Tensor<B, 4> {
        let identity = match &self.downsample {
            Some(down) => down.bn.forward(conv2d(&down.conv, x.clone())),
            None => x.clone(),
        };
        let out = conv2d(&self.conv1, self.bn1.forward(x));
        let out = self.act.forward(self.bn2.forward(out));
        let out = self.bn3.forward(conv2d(&self.conv2, out));
        // insightface applies no activation after the add.
        out + identity
    }
}

/// The IResNet backbone: image to feature vector.
#[derive(Module, Debug)]
pub struct IResNet<B: Backend> {
    /// Stem 3x3 convolution, stride 1, no bias.
    pub stem: Conv2d<B>,
    /// Stem BatchNorm2d.
    pub stem_bn: BatchNorm<B>,
    /// Stem PReLU.
    pub stem_act: PRelu<B>,
    /// All residual blocks, stage after stage.
    pub blocks: Vec<IBasicBlock<B>>,
    /// BatchNorm2d on the last feature map (insightface's `bn2`).
    pub out_bn: BatchNorm<B>,
    /// Dropout before the FC.
    pub dropout: Dropout,
    /// Flattened feature map to the output width.
    pub fc: Linear<B>,
    /// BatchNorm1d on the output (insightface's `features`).
    pub features: BatchNorm<B>,
}

impl<B: ConvBackend> IResNet<B> {
    /// # Shapes
    /// - `images`: `[batch, 3, side, side]`, pixels normalised to [-1, 1]
    /// - output: `[batch, output_width]`
    pub fn forward(&self, images: Tensor<B, 4>) -> Tensor<B, 2> {
        let x = conv2d(&self.stem, images);
        let mut x = self.stem_act.forward(self.stem_bn.forward(x));
        for block in &self.blocks {
            x = block.forward(x);
        }
        let x = self.dropout.forward(self.out_bn.forward(x));
        // [batch, channels, h, w] -> [batch, channels * h * w], channel-major like PyTorch.
        // Mixed precision ends here, as in arcface_torch's IResNet (`self.fc(x.float())`): the
        // FC, the embedding and everything after it are in the parameters' type.
        let x: Tensor<B, 2> = x.flatten(1, 3).cast(self.fc.weight.val().dtype());
        self.features.forward(self.fc.forward(x))
    }
}
