"""The live dispatch dashboard (rich) and the policy explainer: model -> view, pulled by Live."""
