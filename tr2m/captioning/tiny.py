"""Tiny random-weight captioning models of the default architectures, for tests and offline trials.

`build_tiny_describer(folder)` writes a LLaVA-NeXT (Mistral text model, CLIP vision tower) with a
word-level tokenizer and a processor whose chat template has the Mistral-instruct form of the
real `llava-hf/llava-v1.6-mistral-7b-hf`; `build_tiny_lister(folder)` writes a Mask2Former (Swin
backbone) panoptic model with a few COCO-panoptic labels. Both are saved with save_pretrained and
load back through the same from_pretrained path as hub models (nothing is downloaded).
Their output is random words and random segments: they exercise the pipeline, not its quality.
"""
from __future__ import annotations

from pathlib import Path

# Real words, so a random model's output reads like text and survives line cleaning.
WORDS = tuple(("the image shows a room with table chair wall floor window door street car road tree sky "
         "person people building kitchen office bed lamp shelf desk sofa in of on and near two large "
         "small white dark bright open view scene inside outside corridor light").split())
SPECIALS = ("<unk>", "<s>", "</s>", "<pad>", "<image>", "[INST]", "[/INST]")
# Mistral-instruct form, as the real llava-v1.6-mistral processor writes it.
CHAT_TEMPLATE = ("{% for message in messages %}{% if message['role'] == 'user' %}[INST] "
                 "{% for item in message['content'] %}{% if item['type'] == 'image' %}<image>\n"
                 "{% elif item['type'] == 'text' %}{{ item['text'] }}{% endif %}{% endfor %} [/INST]"
                 "{% else %}{% for item in message['content'] %}{{ item['text'] }}{% endfor %}</s>{% endif %}"
                 "{% endfor %}")
IMAGE_SIZE = 32
PATCH = 8
# A few COCO-panoptic labels in that label set's order convention (things first, then stuff).
TINY_LABELS = ("person", "car", "chair", "fire hydrant", "sky-other-merged", "road", "wall-other-merged",
               "floor-wood")


def _tokenizer():
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {token: i for i, token in enumerate(SPECIALS + WORDS + (".", ","))}
    core = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    core.pre_tokenizer = pre_tokenizers.Sequence([pre_tokenizers.WhitespaceSplit(), pre_tokenizers.Punctuation()])
    core.decoder = decoders.WordPiece(prefix="##")  # joins words with spaces
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=core, unk_token="<unk>", bos_token="<s>", eos_token="</s>",
                                        pad_token="<pad>", extra_special_tokens={"image_token": "<image>"})
    tokenizer.add_special_tokens({"additional_special_tokens": ["<image>", "[INST]", "[/INST]"]})
    return tokenizer


def build_tiny_describer(folder: str | Path, seed: int = 0) -> Path:
    """Write a tiny random LLaVA-NeXT (model + processor) to `folder`; returns it."""
    import torch
    from transformers import (CLIPVisionConfig, LlavaNextConfig, LlavaNextForConditionalGeneration,
                              LlavaNextImageProcessor, LlavaNextProcessor, MistralConfig)

    folder = Path(folder)
    tokenizer = _tokenizer()
    image_id = tokenizer.convert_tokens_to_ids("<image>")
    vision = CLIPVisionConfig(image_size=IMAGE_SIZE, patch_size=PATCH, hidden_size=32, intermediate_size=37,
                              num_hidden_layers=2, num_attention_heads=2, projection_dim=32)
    text = MistralConfig(vocab_size=len(tokenizer), hidden_size=32, intermediate_size=37, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=512,
                         bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
                         pad_token_id=tokenizer.pad_token_id)
    pinpoints = [[IMAGE_SIZE, IMAGE_SIZE], [IMAGE_SIZE, 2 * IMAGE_SIZE], [2 * IMAGE_SIZE, IMAGE_SIZE]]
    config = LlavaNextConfig(vision_config=vision, text_config=text, image_token_index=image_id,
                             image_grid_pinpoints=pinpoints, image_seq_length=(IMAGE_SIZE // PATCH) ** 2,
                             vision_feature_layer=-1)
    torch.manual_seed(seed)
    model = LlavaNextForConditionalGeneration(config).eval()
    image_processor = LlavaNextImageProcessor(size={"shortest_edge": IMAGE_SIZE},
                                              crop_size={"height": IMAGE_SIZE, "width": IMAGE_SIZE},
                                              image_grid_pinpoints=pinpoints)
    processor = LlavaNextProcessor(image_processor=image_processor, tokenizer=tokenizer, patch_size=PATCH,
                                   vision_feature_select_strategy="default", chat_template=CHAT_TEMPLATE,
                                   num_additional_image_tokens=1)  # the CLS token, as the real processors say
    model.save_pretrained(folder)
    processor.save_pretrained(folder)
    return folder


def build_tiny_lister(folder: str | Path, seed: int = 0) -> Path:
    """Write a tiny random Mask2Former panoptic model (+ image processor) to `folder`; returns it.

    The class head is scaled to be confident and to disfavour "no object", so a random model still
    reports a few segments above the panoptic threshold.
    """
    import torch
    from transformers import (Mask2FormerConfig, Mask2FormerForUniversalSegmentation, Mask2FormerImageProcessor,
                              SwinConfig)

    folder = Path(folder)
    backbone = SwinConfig(image_size=64, patch_size=4, embed_dim=32, depths=[1, 1, 1, 1], num_heads=[1, 1, 2, 2],
                          window_size=4, out_features=["stage1", "stage2", "stage3", "stage4"])
    labels = dict(enumerate(TINY_LABELS))
    config = Mask2FormerConfig(backbone_config=backbone, feature_size=32, mask_feature_size=32, hidden_dim=32,
                               encoder_feedforward_dim=32, encoder_layers=1, decoder_layers=2, num_attention_heads=2,
                               dim_feedforward=32, num_queries=12, id2label=labels,
                               label2id={v: k for k, v in labels.items()})
    torch.manual_seed(seed)
    model = Mask2FormerForUniversalSegmentation(config).eval()
    with torch.no_grad():
        model.class_predictor.weight.mul_(30.0)  # confident, query-dependent labels
        model.class_predictor.bias[-1] = -10.0  # last logit = "no object"
    processor = Mask2FormerImageProcessor(size={"shortest_edge": 64, "longest_edge": 96}, size_divisor=32)
    model.save_pretrained(folder)
    processor.save_pretrained(folder)
    return folder
