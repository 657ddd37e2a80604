"""Cost: measurement (``memory``), hardware profiles (``hardware``), the arithmetic of training
and serving cost (``model``) and the deployment projection with break-even points
(``projection``)."""
