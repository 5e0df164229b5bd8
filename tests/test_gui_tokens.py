import pytest

from trajkit.gui.tokens import DIFF_MARKER, RECIPIENT, add_gui_special_tokens

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")
tokenizers = pytest.importorskip("tokenizers")


def _tiny_tokenizer():
    words = ["[UNK]", "[PAD]", "all", "os", "click", "hello", "\n"]
    model = tokenizers.models.WordLevel({w: i for i, w in enumerate(words)}, unk_token="[UNK]")
    tok = tokenizers.Tokenizer(model)
    tok.pre_tokenizer = tokenizers.pre_tokenizers.WhitespaceSplit()
    return transformers.PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="[UNK]", pad_token="[PAD]")


def _tiny_model(vocab_size, tie):
    config = transformers.LlamaConfig(
        vocab_size=vocab_size,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=4,
        tie_word_embeddings=tie,
    )
    torch.manual_seed(0)
    return transformers.LlamaForCausalLM(config)


@pytest.mark.parametrize("tie", [False, True])
def test_adds_tokens_and_mean_initializes_rows(tie):
    tokenizer = _tiny_tokenizer()
    model = _tiny_model(len(tokenizer), tie)
    old_in = model.get_input_embeddings().weight.detach().clone()
    old_out = model.get_output_embeddings().weight.detach().clone()

    ids = add_gui_special_tokens(tokenizer, model)

    assert ids == [len(old_in), len(old_in) + 1]
    assert tokenizer.convert_ids_to_tokens(ids) == [RECIPIENT, DIFF_MARKER]
    encoded = tokenizer(f"hello{RECIPIENT}os click{DIFF_MARKER}")["input_ids"]
    assert ids[0] in encoded and ids[1] in encoded
    new_in = model.get_input_embeddings().weight
    new_out = model.get_output_embeddings().weight
    assert new_in.shape[0] == len(tokenizer) == len(old_in) + 2
    assert torch.equal(new_in[: len(old_in)], old_in)
    for row in ids:
        assert torch.allclose(new_in[row], old_in.mean(dim=0), atol=1e-6)
        assert torch.allclose(new_out[row], old_out.mean(dim=0), atol=1e-6)
    # The model still runs with the new ids.
    out = model(torch.tensor([encoded]))
    assert out.logits.shape[-1] == len(tokenizer)


def test_second_call_changes_nothing():
    tokenizer = _tiny_tokenizer()
    model = _tiny_model(len(tokenizer), tie=False)
    first = add_gui_special_tokens(tokenizer, model)
    before = model.get_input_embeddings().weight.detach().clone()
    assert add_gui_special_tokens(tokenizer, model) == first
    assert torch.equal(model.get_input_embeddings().weight, before)


def test_tokenizer_only():
    tokenizer = _tiny_tokenizer()
    ids = add_gui_special_tokens(tokenizer)
    assert RECIPIENT in tokenizer.all_special_tokens and DIFF_MARKER in tokenizer.all_special_tokens
    assert tokenizer.decode([ids[0]], skip_special_tokens=True) == ""


def test_existing_extra_special_tokens_are_kept():
    tokenizer = _tiny_tokenizer()
    tokenizer.add_special_tokens({"pad_token": "[PAD]"})
    tokenizer.add_tokens(["<|im_start|>"], special_tokens=True)
    add_gui_special_tokens(tokenizer)
    assert "<|im_start|>" in tokenizer.get_vocab()
    assert len(tokenizer(f"<|im_start|>{RECIPIENT}")["input_ids"]) == 2


def test_padded_embedding_matrix_is_not_shrunk():
    tokenizer = _tiny_tokenizer()
    model = _tiny_model(len(tokenizer) + 8, tie=False)  # rows beyond the vocabulary, as in Qwen
    old = model.get_input_embeddings().weight.detach().clone()
    ids = add_gui_special_tokens(tokenizer, model)
    weight = model.get_input_embeddings().weight
    assert weight.shape == old.shape
    kept = [i for i in range(old.shape[0]) if i not in ids]
    for row in ids:
        assert torch.allclose(weight[row], old[kept].mean(dim=0), atol=1e-6)
