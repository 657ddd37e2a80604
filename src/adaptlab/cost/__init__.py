"""Cost: measurement (``memory``), hardware profiles (``hardware``), the arithmetic of training
and serving cost (``model``), a strategy's training workload before it trains (``workload``)
and the deployment projection with break-even points (``projection``). The experiment-level
estimate, which reads strategies and runs on record, is :mod:`adaptlab.estimate`, a layer up."""
