"""The registered policy as an MLflow pyfunc model ("models from code": this file is logged with the model).

Loaded with ``mlflow.pyfunc.load_model("models:/hps-policy@champion")``, it completes a batch of prompts.
A prompt is plain text, an HH-RLHF transcript, or a JSON list of ``{"role", "content"}`` chat messages;
the model renders it with the tokenizer's chat template exactly as training did
(:mod:`hps_core.data.chat`, bundled beside this file as ``hps_chat.py``), so a client never formats
prompts itself. It imports nothing of this project at load time: the bundled copy is used, and this
package's module only when the file runs outside a logged model (tests).
"""

import mlflow
import pandas as pd
from mlflow.pyfunc import PythonModel

try:  # the renderer bundled with the logged model (code_paths), the same text it was trained with
    from hps_chat import ChatFormat
except ImportError:  # imported from the package itself
    from hps_core.data.chat import ChatFormat

BUNDLED_CHAT_MODULE = "hps_chat.py"


class HFCausalLM(PythonModel):
    """A Hugging Face causal LM directory (safetensors) that answers a batch of prompts."""

    def load_context(self, context):
        from transformers import AutoModelForCausalLM, AutoTokenizer

        path = context.artifacts["hf_model"]
        self.tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=True)
        self.model = AutoModelForCausalLM.from_pretrained(path, local_files_only=True, use_safetensors=True)
        self.model.eval()
        self.chat = ChatFormat(self.tokenizer)

    def predict(self, context, model_input: pd.DataFrame, params=None) -> list:
        import torch

        if isinstance(model_input, pd.DataFrame):  # what pyfunc hands over after schema enforcement
            col = "prompt" if "prompt" in model_input.columns else model_input.columns[0]
            model_input = model_input[col].tolist()
        prompts = [model_input] if isinstance(model_input, str) else list(model_input)
        params = params or {}
        kwargs = {"max_new_tokens": int(params.get("max_new_tokens", 32)),
                  "do_sample": bool(params.get("do_sample", False))}
        if kwargs["do_sample"]:
            kwargs["temperature"] = float(params.get("temperature", 1.0))
        pad = self.tokenizer.pad_token_id
        if pad is None:
            pad = self.tokenizer.eos_token_id
        device = next(self.model.parameters()).device
        out = []
        with torch.no_grad():
            for prompt in prompts:  # one at a time: no padding side to get wrong
                ids = torch.tensor([self.chat.prompt_ids(prompt)], device=device)
                gen = self.model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), pad_token_id=pad,
                                          eos_token_id=self.chat.stop_ids, **kwargs)
                out.append(self.tokenizer.decode(gen[0, ids.shape[1]:], skip_special_tokens=True).strip())
        return out


mlflow.models.set_model(HFCausalLM())
